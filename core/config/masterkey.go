package config

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// MasterKeySize is the length of the master key in bytes.
const MasterKeySize = 32

// DecodeMasterKey decodes a 32-byte master key written as 64 hex digits or as
// base64 (standard or URL alphabet, with or without padding). Surrounding
// white space is ignored. The error never contains the key.
func DecodeMasterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if isHex(s) {
		// Hex text is often valid base64 as well; read it as hex so a short
		// hex key is reported with its real length.
		b, err := hex.DecodeString(s)
		if err == nil && len(b) == MasterKeySize {
			return b, nil
		}
		if err == nil {
			return nil, fmt.Errorf("must be %d bytes, base64 or hex; got %d bytes", MasterKeySize, len(b))
		}
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding,
		base64.URLEncoding, base64.RawURLEncoding,
	} {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(b) != MasterKeySize {
			return nil, fmt.Errorf("must be %d bytes, base64 or hex; got %d bytes", MasterKeySize, len(b))
		}
		return b, nil
	}
	return nil, fmt.Errorf("must be %d bytes, base64 or hex; got %d characters that are neither", MasterKeySize, len(s))
}

// isHex reports whether s is a non-empty string of hex digits.
func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}
