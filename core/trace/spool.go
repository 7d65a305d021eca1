package trace

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/loom-runtime/loom/core/store"
)

// The spool keeps batches the store could not take, one file per batch:
//
//	"LOOMSPOOL1\n", then per trace: uint32 length, uint32 CRC-32C of the
//	payload, payload (the sealed store.Trace as JSON).
//
// A file is written under a temporary name, fsync'd, renamed into place and
// the directory fsync'd, so a crash leaves either a whole file or none.
// Only sealed rows are spooled: no plaintext body ever reaches the disk.
const spoolMagic = "LOOMSPOOL1\n"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type spool struct {
	dir   string
	max   int64
	bytes atomic.Int64

	mu  sync.Mutex
	seq uint64
}

func openSpool(dir string, max int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create spool directory: %w", err)
	}
	s := &spool{dir: dir, max: max}
	files, err := s.files()
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		info, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.bytes.Add(info.Size())
		if n, err := strconv.ParseUint(strings.TrimSuffix(f, ".spool"), 10, 64); err == nil && n >= s.seq {
			s.seq = n + 1
		}
	}
	// Leftover temporary files are batches whose write never completed:
	// their traces were not acknowledged as spooled, so they are still
	// in memory or were never durable; remove them.
	tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	for _, t := range tmps {
		os.Remove(t)
	}
	return s, nil
}

// files lists complete spool files, oldest first.
func (s *spool) files() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read spool: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".spool") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out) // names are zero-padded sequence numbers
	return out, nil
}

// full reports whether the spool has reached its size limit.
func (s *spool) full() bool { return s.max > 0 && s.bytes.Load() >= s.max }

// append writes rows as one durable file.
func (s *spool) append(rows []store.Trace) error {
	var buf bytes.Buffer
	buf.WriteString(spoolMagic)
	var hdr [8]byte
	for i := range rows {
		payload, err := json.Marshal(&rows[i])
		if err != nil {
			return fmt.Errorf("encode spooled trace: %w", err)
		}
		binary.BigEndian.PutUint32(hdr[:4], uint32(len(payload)))
		binary.BigEndian.PutUint32(hdr[4:], crc32.Checksum(payload, crcTable))
		buf.Write(hdr[:])
		buf.Write(payload)
	}
	s.mu.Lock()
	name := fmt.Sprintf("%020d.spool", s.seq)
	s.seq++
	s.mu.Unlock()
	final := filepath.Join(s.dir, name)
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	_, werr := f.Write(buf.Bytes())
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool write: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool rename: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("spool sync: %w", err)
	}
	s.bytes.Add(int64(buf.Len()))
	return nil
}

// read decodes a spool file, checking every record's checksum. A damaged
// file (a torn or corrupted record) yields the intact records before the
// damage along with the error, so they can still be replayed.
func (s *spool) read(name string) ([]store.Trace, error) {
	f, err := os.Open(filepath.Join(s.dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	magic := make([]byte, len(spoolMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != spoolMagic {
		return nil, fmt.Errorf("spool file %s: bad header", name)
	}
	var rows []store.Trace
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
			return rows, nil
		} else if err != nil {
			return rows, fmt.Errorf("spool file %s: record %d: truncated header", name, len(rows)+1)
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return rows, fmt.Errorf("spool file %s: record %d: truncated", name, len(rows)+1)
		}
		if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
			return rows, fmt.Errorf("spool file %s: record %d fails its checksum", name, len(rows)+1)
		}
		var t store.Trace
		if err := json.Unmarshal(payload, &t); err != nil {
			return rows, fmt.Errorf("spool file %s: record %d: %w", name, len(rows)+1, err)
		}
		if t.CanonicalVersion == 0 {
			// Spooled by a Loom from before canonical versions were
			// stored: hashed with v1.
			t.CanonicalVersion = CanonicalV1
		}
		rows = append(rows, t)
	}
}

// ReadSpool returns the traces waiting in the spool directory dir, oldest
// first, exactly as a recorder started on it would replay them (for audits
// and tests; it changes nothing on disk).
func ReadSpool(dir string) ([]store.Trace, error) {
	s := &spool{dir: dir}
	files, err := s.files()
	if err != nil {
		return nil, err
	}
	var rows []store.Trace
	for _, f := range files {
		r, err := s.read(f)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

// remove deletes a replayed file.
func (s *spool) remove(name string) error {
	path := filepath.Join(s.dir, name)
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	s.bytes.Add(-info.Size())
	return syncDir(s.dir)
}

// quarantine moves a file that cannot be replayed aside, keeping it for an
// operator. Sequence numbers start again at 0 once the spool has emptied,
// so a name already in spool/corrupt gets a suffix rather than replace it.
func (s *spool) quarantine(name string) error {
	bad := filepath.Join(s.dir, "corrupt")
	if err := os.MkdirAll(bad, 0o700); err != nil {
		return err
	}
	info, err := os.Stat(filepath.Join(s.dir, name))
	if err != nil {
		return err
	}
	dst := filepath.Join(bad, name)
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
			break
		}
		dst = filepath.Join(bad, fmt.Sprintf("%s.%d", name, i))
	}
	if err := os.Rename(filepath.Join(s.dir, name), dst); err != nil {
		return err
	}
	s.bytes.Add(-info.Size())
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
