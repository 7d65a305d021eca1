// Package sse reads and writes Server-Sent Events streams, as specified by
// the WHATWG HTML standard ("event stream interpretation"):
// https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
//
// The Reader hands each event's data over byte for byte: it does not
// validate or transcode UTF-8, and it never joins or splits anything but
// data lines.
package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
)

// DefaultMaxEventBytes is the event size limit NewReader uses when given
// a limit of zero or less.
const DefaultMaxEventBytes = 1 << 20

// ErrEventTooLarge is wrapped by the error Next returns for an event
// larger than the Reader's limit.
var ErrEventTooLarge = errors.New("sse: event too large")

// Event is one dispatched event.
type Event struct {
	// Data is the event's data: the values of its data lines (without the
	// "data:" prefix and the single optional space after the colon), joined
	// with "\n". It is never nil for a dispatched event, and it is the
	// caller's: the Reader does not touch it again.
	Data []byte
	// Event is the value of the event's last "event" field ("" if none).
	Event string
	// ID is the last event ID: the value of the last "id" field seen so
	// far in the stream, in this event or an earlier one, as the standard
	// specifies (an "id" field containing NUL is ignored; "id:" with no
	// value resets it to "").
	ID string
}

const (
	initialBufSize = 1024 // grows by doubling to the longest line seen; events are typically a few hundred bytes
	maxReadRetries = 100  // reads returning 0, nil before io.ErrNoProgress
	keepDataCap    = 64 << 10
)

var bom = []byte("\xEF\xBB\xBF")

// Reader reads events from an event stream. It buffers its input, so it
// may read more than it returns; it is not safe for concurrent use.
//
// Lines may end with LF, CRLF or CR, mixed freely. A leading UTF-8 byte
// order mark is skipped. Comment lines (starting with ':') and unknown
// fields (including "retry") are ignored. A blank line dispatches the event
// gathered since the previous blank line, unless it had no data line.
//
// The limit bounds the raw size of an event: the bytes of all its lines
// (field names, values, comments; each line terminator counted as one
// byte) after the previous blank line and before the one that dispatches
// it. A
// block that exceeds it makes Next fail with an error wrapping
// ErrEventTooLarge. A Reader therefore holds at most about twice the limit
// in memory, whatever its input.
type Reader struct {
	src io.Reader
	max int

	buf        []byte
	rpos, wpos int   // unread bytes are buf[rpos:wpos]
	lf         int   // index in buf of the next LF at or after rpos, if ≥ rpos; -1: none in buf[rpos:lfScanned]
	lfScanned  int   // how far the last LF search that found nothing went
	rerr       error // error from src, returned once the buffer is drained

	started bool // the byte order mark check is done
	skipLF  bool // the last line ended with CR: an LF right after it belongs to it
	size    int  // raw bytes of the current event so far
	inEvent bool // a field line was seen since the last blank line

	data      []byte // the data buffer
	hasData   bool   // a data line was seen (data may still be empty)
	eventType []byte
	lastType  string // eventType as a string, reused while it does not change
	id        string

	err error // sticky: returned by every Next after the first error
}

// NewReader returns a Reader reading from r that refuses events larger than
// maxEventBytes (DefaultMaxEventBytes if maxEventBytes ≤ 0).
func NewReader(r io.Reader, maxEventBytes int) *Reader {
	if maxEventBytes <= 0 {
		maxEventBytes = DefaultMaxEventBytes
	}
	return &Reader{src: r, max: maxEventBytes, lf: -1}
}

// Next returns the next event. At the end of the input it returns io.EOF.
//
// Per the standard, an event that the input ends in the middle of (no
// blank line after it) is not dispatched: Next then returns an error
// wrapping io.ErrUnexpectedEOF instead of io.EOF, so a truncated stream is
// told apart from a complete one. Input that ends after a blank line, or
// with nothing but comments since the last one, ends with io.EOF.
//
// Once Next has returned an error it returns the same error forever.
func (r *Reader) Next() (Event, error) {
	if r.err != nil {
		return Event{}, r.err
	}
	for {
		line, err := r.readLine()
		if err != nil {
			r.err = r.endError(line, err)
			return Event{}, r.err
		}
		if len(line) == 0 {
			if ev, ok := r.dispatch(); ok {
				return ev, nil
			}
			continue
		}
		r.processLine(line)
	}
}

// endError is the error Next reports when readLine fails: partial is the
// unterminated line the input ended with.
func (r *Reader) endError(partial []byte, err error) error {
	if err != io.EOF {
		return err
	}
	if r.inEvent || (len(partial) > 0 && partial[0] != ':') {
		return fmt.Errorf("sse: input ended inside an event (no blank line after it): %w", io.ErrUnexpectedEOF)
	}
	return io.EOF
}

// dispatch handles a blank line.
func (r *Reader) dispatch() (Event, bool) {
	r.size = 0
	r.inEvent = false
	if !r.hasData {
		r.eventType = r.eventType[:0]
		return Event{}, false
	}
	ev := Event{Data: make([]byte, len(r.data)), ID: r.id}
	copy(ev.Data, r.data)
	if string(r.eventType) != r.lastType {
		r.lastType = string(r.eventType)
	}
	ev.Event = r.lastType
	r.hasData = false
	r.eventType = r.eventType[:0]
	if cap(r.data) > keepDataCap {
		r.data = nil // do not keep a huge event's buffer for the stream's life
	} else {
		r.data = r.data[:0]
	}
	return ev, true
}

// processLine handles a non-blank line.
func (r *Reader) processLine(line []byte) {
	if line[0] == ':' {
		return // comment
	}
	r.inEvent = true
	field, value := line, line[len(line):]
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		if r.hasData {
			r.data = append(r.data, '\n')
		}
		r.data = append(r.data, value...)
		r.hasData = true
	case "event":
		r.eventType = append(r.eventType[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 && string(value) != r.id {
			r.id = string(value)
		}
	}
}

// readLine returns the next line without its terminator. The slice points
// into the buffer and is valid until the next call. On a read error
// (io.EOF included) it returns the unterminated rest of the input, if any,
// with the error.
func (r *Reader) readLine() ([]byte, error) {
	if !r.started {
		r.skipBOM()
	}
	for {
		if r.skipLF && r.rpos < r.wpos {
			if r.buf[r.rpos] == '\n' {
				r.rpos++
			}
			r.skipLF = false
		}
		if !r.skipLF { // else the buffer is empty and the next byte decides
			if i := r.indexEOL(); i >= 0 {
				line := r.buf[r.rpos:i]
				r.skipLF = r.buf[i] == '\r'
				r.rpos = i + 1
				if len(line) > 0 {
					r.size += len(line) + 1
					if r.size > r.max {
						return nil, r.tooLarge()
					}
				}
				return line, nil
			}
			// An unterminated line: refuse it as soon as it cannot fit.
			if r.size+(r.wpos-r.rpos) > r.max {
				return nil, r.tooLarge()
			}
		}
		if r.rerr != nil {
			r.skipLF = false
			line := r.buf[r.rpos:r.wpos]
			r.rpos = r.wpos
			return line, r.rerr
		}
		r.fill()
	}
}

func (r *Reader) tooLarge() error { return tooLargeError{r.max} }

// tooLargeError is ErrEventTooLarge with the limit in its message.
type tooLargeError struct{ max int }

func (e tooLargeError) Error() string        { return fmt.Sprintf("sse: event larger than %d bytes", e.max) }
func (e tooLargeError) Is(target error) bool { return target == ErrEventTooLarge }

// indexEOL returns the index in buf of the first CR or LF in
// buf[rpos:wpos], or -1. LF searches are remembered, so a stream of
// CR-terminated lines is not rescanned for LF on every line.
func (r *Reader) indexEOL() int {
	if r.lf < r.rpos {
		start := r.rpos
		if r.lf < 0 {
			start = max(start, r.lfScanned)
		}
		if j := bytes.IndexByte(r.buf[start:r.wpos], '\n'); j >= 0 {
			r.lf = start + j
		} else {
			r.lf, r.lfScanned = -1, r.wpos
		}
	}
	end := r.wpos
	if r.lf >= 0 {
		end = r.lf
	}
	if k := bytes.IndexByte(r.buf[r.rpos:end], '\r'); k >= 0 {
		return r.rpos + k
	}
	return r.lf
}

// skipBOM drops a byte order mark at the very start of the input.
func (r *Reader) skipBOM() {
	for r.wpos-r.rpos < len(bom) && bytes.HasPrefix(bom, r.buf[r.rpos:r.wpos]) && r.rerr == nil {
		r.fill()
	}
	if bytes.HasPrefix(r.buf[r.rpos:r.wpos], bom) {
		r.rpos += len(bom)
	}
	r.started = true
}

// fill reads more input into the buffer, making room first: it moves the
// unread bytes to the front and, when they fill the buffer, grows it (never
// beyond what the size limit lets a line reach).
func (r *Reader) fill() {
	// A line may grow to max bytes before it is refused; a few more bytes
	// are needed to see the BOM of a tiny stream.
	limit := max(r.max+1, 16)
	if r.buf == nil {
		r.buf = make([]byte, min(initialBufSize, limit))
	}
	if r.rpos > 0 && (r.rpos == r.wpos || r.wpos == len(r.buf)) {
		n := copy(r.buf, r.buf[r.rpos:r.wpos])
		if r.lf >= r.rpos {
			r.lf -= r.rpos
		} else {
			r.lf = -1
		}
		r.lfScanned = max(r.lfScanned-r.rpos, 0)
		r.rpos, r.wpos = 0, n
	}
	if r.wpos == len(r.buf) {
		nb := make([]byte, min(2*len(r.buf), limit))
		copy(nb, r.buf[:r.wpos])
		r.buf = nb
	}
	for range maxReadRetries {
		n, err := r.src.Read(r.buf[r.wpos:])
		if n < 0 || n > len(r.buf)-r.wpos {
			r.rerr = errors.New("sse: reader returned an invalid count")
			return
		}
		r.wpos += n
		if err != nil {
			r.rerr = err
			return
		}
		if n > 0 {
			return
		}
	}
	r.rerr = io.ErrNoProgress
}

// AppendEvent appends data to dst as one event ("data: …" lines and a
// blank line) and returns the extended slice. Data containing line breaks
// becomes several data lines, so a Reader returns it unchanged; a CR or
// CRLF in data cannot be represented in an event stream and is written as
// a line break (it reads back as "\n").
func AppendEvent(dst, data []byte) []byte {
	for {
		dst = append(dst, "data: "...)
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			dst = append(dst, data...)
			break
		}
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(dst, '\n', '\n')
}

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// WriteEvent writes data to w as one event, in a single Write call (see
// AppendEvent for the format). It does not flush w.
func WriteEvent(w io.Writer, data []byte) error {
	bp := writeBufs.Get().(*[]byte)
	b := AppendEvent((*bp)[:0], data)
	_, err := w.Write(b)
	if cap(b) <= keepDataCap {
		*bp = b
		writeBufs.Put(bp)
	}
	return err
}
