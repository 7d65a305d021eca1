package openaicompat

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"

	"github.com/loom-runtime/loom/sdk/provider"
)

// A body or chunk is never decoded as a whole: scanTop walks its top-level
// object, skipping every value without decoding it, and only "model",
// "usage" (and, for chunks, "choices") are looked at. That keeps the
// bytes as they are and costs little even for a large embeddings answer.

// topFields are the raw values of the top-level members of a JSON object
// that matter here (nil when absent).
type topFields struct {
	model, usage, choices []byte
}

// scanTop returns the raw values of the top-level "model", "usage" and
// "choices" members of the JSON object b. It does not validate b: on
// malformed input it returns what it found before the fault. Keys written
// with escapes are not recognised.
func scanTop(b []byte) topFields {
	var f topFields
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return f
	}
	i++
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return f
		}
		end := skipString(b, i)
		if end < 0 {
			return f
		}
		key := b[i+1 : end-1]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return f
		}
		i = skipSpace(b, i+1)
		vend := skipValue(b, i)
		if vend < 0 {
			return f
		}
		switch string(key) {
		case "model":
			f.model = b[i:vend]
		case "usage":
			f.usage = b[i:vend]
		case "choices":
			f.choices = b[i:vend]
		}
		i = skipSpace(b, vend)
		if i >= len(b) || b[i] != ',' {
			return f
		}
		i++
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipString returns the index just past the JSON string starting at
// b[i] == '"', or -1 if it does not end.
func skipString(b []byte, i int) int {
	i++
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		// The quote ends the string unless an odd number of backslashes
		// precedes it.
		n := 0
		for k := i - 1; k >= 0 && b[k] == '\\'; k-- {
			n++
		}
		i++
		if n%2 == 0 {
			return i
		}
	}
}

// skipValue returns the index just past the JSON value starting at b[i],
// or -1 if it does not end.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				if i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default: // number, true, false, null
		start := i
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\n' && b[i] != '\r' && b[i] != '\t' {
			i++
		}
		if i == start {
			return -1
		}
		return i
	}
}

// isNull reports whether a raw value is absent or null.
func isNull(v []byte) bool { return len(v) == 0 || string(v) == "null" }

// isEmptyArray reports whether a raw value is [] (with any spacing).
func isEmptyArray(v []byte) bool {
	return len(v) >= 2 && v[0] == '[' && skipSpace(v, 1) == len(v)-1
}

// modelOf decodes a raw "model" value ("" unless it is a string).
func modelOf(v []byte) string {
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1])
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return ""
	}
	return s
}

// usageJSON is OpenAI's usage object, the parts Loom records.
type usageJSON struct {
	PromptTokens        count `json:"prompt_tokens"`
	CompletionTokens    count `json:"completion_tokens"`
	TotalTokens         count `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens count `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails *struct {
		ReasoningTokens count `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

// count is a token count. It takes what OpenAI-compatible servers send:
// integers, integral floats (12.0), numbers in strings ("12"); anything
// else (null, negative, fractional, other types) counts as 0 rather than
// failing the whole usage.
type count int64

func (c *count) UnmarshalJSON(b []byte) error {
	if len(b) > 1 && b[0] == '"' {
		b = b[1 : len(b)-1]
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err == nil && f >= 0 && f <= math.MaxInt64 && f == math.Trunc(f) {
		*c = count(f)
	}
	return nil
}

// usageOf decodes a raw "usage" value (nil when absent, null or not an
// object).
func usageOf(v []byte) *provider.Usage {
	if isNull(v) || v[0] != '{' {
		return nil
	}
	var u usageJSON
	if json.Unmarshal(v, &u) != nil {
		return nil
	}
	out := &provider.Usage{
		PromptTokens:     int64(u.PromptTokens),
		CompletionTokens: int64(u.CompletionTokens),
		TotalTokens:      int64(u.TotalTokens),
	}
	if u.PromptTokensDetails != nil {
		out.CachedPromptTokens = int64(u.PromptTokensDetails.CachedTokens)
	}
	if u.CompletionTokensDetails != nil {
		out.ReasoningTokens = int64(u.CompletionTokensDetails.ReasoningTokens)
	}
	return out
}

// parseBody returns the usage and model of a successful unary answer.
func parseBody(body []byte) (*provider.Usage, string) {
	f := scanTop(body)
	return usageOf(f.usage), modelOf(f.model)
}

var usageKey = []byte(`"usage"`)

// mayHaveUsage is the cheap test run on every stream chunk: it reports
// whether data has a "usage" key whose value is not null. OpenAI sends
// "usage":null in every chunk when usage is requested, so a plain search
// for the key would not filter anything. A match inside a string value
// is possible (rarely) and only costs a scan.
func mayHaveUsage(data []byte) bool {
	for {
		i := bytes.Index(data, usageKey)
		if i < 0 {
			return false
		}
		data = data[i+len(usageKey):]
		j := skipSpace(data, 0)
		if j >= len(data) || data[j] != ':' {
			continue
		}
		j = skipSpace(data, j+1)
		if !bytes.HasPrefix(data[j:], []byte("null")) {
			return true
		}
	}
}

var modelKey = []byte(`"model"`)

// chunkInfo is what a stream chunk tells: its usage, its model, and whether
// it is the usage-only chunk.
type chunkInfo struct {
	usage     *provider.Usage
	model     string
	usageOnly bool
}

// inspectChunk looks at a stream chunk's top level, only when it may hold
// usage or when the model is still unknown (wantModel).
func inspectChunk(data []byte, wantModel bool) chunkInfo {
	var ci chunkInfo
	hasUsage := mayHaveUsage(data)
	if !hasUsage && !(wantModel && bytes.Contains(data, modelKey)) {
		return ci
	}
	f := scanTop(data)
	ci.model = modelOf(f.model)
	if hasUsage {
		ci.usage = usageOf(f.usage)
		// The usage chunk has "choices": [] (some servers leave choices
		// out or send null: a chunk with usage and no choices is the same
		// thing).
		ci.usageOnly = ci.usage != nil && (isNull(f.choices) || isEmptyArray(f.choices))
	}
	return ci
}
