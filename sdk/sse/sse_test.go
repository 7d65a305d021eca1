package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// result is what reading a whole input yields: its events and how it ended.
type result struct {
	Events []Event
	End    string // "eof", "unexpected-eof", "too-large" or another error's text
}

func endOf(err error) string {
	switch {
	case err == io.EOF:
		return "eof"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected-eof"
	case errors.Is(err, ErrEventTooLarge):
		return "too-large"
	}
	return err.Error()
}

func readAll(t testing.TB, r io.Reader, max int) result {
	t.Helper()
	rd := NewReader(r, max)
	var res result
	for i := 0; ; i++ {
		ev, err := rd.Next()
		if err != nil {
			res.End = endOf(err)
			if _, err2 := rd.Next(); err2 != err {
				t.Fatalf("Next after %v returned %v, want the same error", err, err2)
			}
			return res
		}
		if ev.Data == nil {
			t.Fatalf("event %d has nil Data", i)
		}
		res.Events = append(res.Events, ev)
		if i > 1<<20 {
			t.Fatal("too many events")
		}
	}
}

func ev(data string) Event { return Event{Data: []byte(data)} }

func TestReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Event
		end  string
	}{
		{"empty input", "", nil, "eof"},
		{"one event LF", "data: hello\n\n", []Event{ev("hello")}, "eof"},
		{"one event CRLF", "data: hello\r\n\r\n", []Event{ev("hello")}, "eof"},
		{"one event CR", "data: hello\r\r", []Event{ev("hello")}, "eof"},
		{"mixed line endings", "data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r\n", []Event{ev("a\nb\nc"), ev("d")}, "eof"},
		{"CR then LF is one line ending", "data: a\r\n\ndata: b\n\r\n", []Event{ev("a"), ev("b")}, "eof"},
		{"LF then CR is two line endings", "data: a\n\rdata: b\n\n", []Event{ev("a"), ev("b")}, "eof"},
		{"several events", "data: 1\n\ndata: 2\n\ndata: 3\n\n", []Event{ev("1"), ev("2"), ev("3")}, "eof"},
		{"multi-line data", "data: line one\ndata: line two\ndata:\ndata: four\n\n", []Event{ev("line one\nline two\n\nfour")}, "eof"},
		{"no space after colon", "data:x\n\n", []Event{ev("x")}, "eof"},
		{"only one space is stripped", "data:  two spaces\n\n", []Event{ev(" two spaces")}, "eof"},
		{"tab is kept", "data:\tx\n\n", []Event{ev("\tx")}, "eof"},
		{"colon in value", "data: {\"a\":\"b:c\"}\n\n", []Event{ev(`{"a":"b:c"}`)}, "eof"},
		{"trailing space kept", "data: x \n\n", []Event{ev("x ")}, "eof"},
		{"empty data dispatches empty event", "data:\n\n", []Event{ev("")}, "eof"},
		{"empty data with space", "data: \n\n", []Event{ev("")}, "eof"},
		{"field without colon is empty data", "data\n\n", []Event{ev("")}, "eof"},
		{"two bare data lines", "data\ndata\n\n", []Event{ev("\n")}, "eof"},
		{"comments ignored", ": keep-alive\n\n:\ndata: x\n: inside\n\n: end\n", []Event{ev("x")}, "eof"},
		{"comment only at EOF without newline", "data: x\n\n: ping", []Event{ev("x")}, "eof"},
		{"event without data is not dispatched", "event: ping\n\ndata: x\n\n", []Event{ev("x")}, "eof"},
		{"id without data is not dispatched but kept", "id: 7\n\ndata: x\n\n", []Event{{Data: []byte("x"), ID: "7"}}, "eof"},
		{"event type", "event: delta\ndata: x\n\ndata: y\n\n", []Event{{Data: []byte("x"), Event: "delta"}, ev("y")}, "eof"},
		{"last event field wins", "event: a\nevent: b\ndata: x\n\n", []Event{{Data: []byte("x"), Event: "b"}}, "eof"},
		{"event field without colon", "event: a\nevent\ndata: x\n\n", []Event{ev("x")}, "eof"},
		{"id persists", "id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
			[]Event{{Data: []byte("a"), ID: "1"}, {Data: []byte("b"), ID: "1"}, ev("c")}, "eof"},
		{"id with NUL ignored", "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
			[]Event{{Data: []byte("a"), ID: "1"}, {Data: []byte("b"), ID: "1"}}, "eof"},
		{"unknown fields and retry ignored", "retry: 1000\nfoo: bar\nDATA: no\ndata: x\n\n", []Event{ev("x")}, "eof"},
		{"field name is case-sensitive and exact", "data : x\n data: y\ndata: z\n\n", []Event{ev("z")}, "eof"},
		{"BOM at start skipped", "\xEF\xBB\xBFdata: x\n\n", []Event{ev("x")}, "eof"},
		{"only one BOM skipped", "\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n", []Event{ev("y")}, "eof"},
		{"BOM later is data", "data: \xEF\xBB\xBFx\n\n", []Event{ev("\xEF\xBB\xBFx")}, "eof"},
		{"partial BOM is not skipped", "\xEF\xBBdata: x\n\ndata: y\n\n", []Event{ev("y")}, "eof"},
		{"BOM alone", "\xEF\xBB\xBF", nil, "eof"},
		{"DONE", "data: {\"choices\":[]}\n\ndata: [DONE]\n\n", []Event{ev(`{"choices":[]}`), ev("[DONE]")}, "eof"},
		{"invalid UTF-8 passed through", "data: \xff\xfe\x00\n\n", []Event{ev("\xff\xfe\x00")}, "eof"},
		{"many blank lines", "\n\n\r\n\r\rdata: x\n\n\n\n", []Event{ev("x")}, "eof"},
		{"trailing event without blank line", "data: a\n\ndata: b\n", []Event{ev("a")}, "unexpected-eof"},
		{"trailing unterminated data line", "data: a\n\ndata: b", []Event{ev("a")}, "unexpected-eof"},
		{"trailing CR-terminated line", "data: a\n\ndata: b\r", []Event{ev("a")}, "unexpected-eof"},
		{"trailing event field", "data: a\n\nevent: x\n", []Event{ev("a")}, "unexpected-eof"},
		{"trailing CR after blank line", "data: a\r\r", []Event{ev("a")}, "eof"},
		{"trailing CRLF after blank line", "data: a\r\n\r\n", []Event{ev("a")}, "eof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAll(t, strings.NewReader(tt.in), 0)
			want := result{Events: tt.want, End: tt.end}
			if !reflect.DeepEqual(normalise(got), normalise(want)) {
				t.Errorf("input %q:\n got %s\nwant %s", tt.in, show(got), show(want))
			}
			// The same input, one byte at a time.
			got1 := readAll(t, iotest.OneByteReader(strings.NewReader(tt.in)), 0)
			if !reflect.DeepEqual(normalise(got1), normalise(want)) {
				t.Errorf("input %q byte by byte:\n got %s\nwant %s", tt.in, show(got1), show(want))
			}
		})
	}
}

// normalise makes empty and nil event lists compare equal.
func normalise(r result) result {
	if len(r.Events) == 0 {
		r.Events = nil
	}
	return r
}

func show(r result) string {
	var b strings.Builder
	for _, e := range r.Events {
		fmt.Fprintf(&b, "{data=%q event=%q id=%q} ", e.Data, e.Event, e.ID)
	}
	return b.String() + "end=" + r.End
}

func TestReaderLimit(t *testing.T) {
	// "data: " + 10 bytes + "\n" = 17 raw bytes.
	event := "data: 0123456789\n"
	tests := []struct {
		name string
		in   string
		max  int
		want []Event
		end  string
	}{
		{"fits exactly", event + "\n", 17, []Event{ev("0123456789")}, "eof"},
		{"one byte over", event + "\n", 16, nil, "too-large"},
		{"limit is per event", event + "\n" + event + "\n", 17, []Event{ev("0123456789"), ev("0123456789")}, "eof"},
		{"lines add up", "data: 01234\ndata: 56789\n\n", 24, []Event{ev("01234\n56789")}, "eof"},
		{"lines add up over", "data: 01234\ndata: 56789\n\n", 23, nil, "too-large"},
		{"comments count", ": 0123456789\ndata: x\n\n", 20, nil, "too-large"},
		{"unterminated long line", "data: " + strings.Repeat("x", 100), 50, nil, "too-large"},
		{"events before are kept", "data: a\n\ndata: " + strings.Repeat("x", 100) + "\n\n", 50, []Event{ev("a")}, "too-large"},
		{"blank lines reset", strings.Repeat(": 0123456789\n\n", 100) + "data: x\n\n", 14, []Event{ev("x")}, "eof"},
		{"tiny limit with BOM", "\xEF\xBB\xBFdata\n\n", 5, []Event{ev("")}, "eof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				got := readAll(t, r, tt.max)
				want := result{Events: tt.want, End: tt.end}
				if !reflect.DeepEqual(normalise(got), normalise(want)) {
					t.Errorf("input %q max %d:\n got %s\nwant %s", tt.in, tt.max, show(got), show(want))
				}
			}
		})
	}
}

func TestReaderLimitError(t *testing.T) {
	_, err := NewReader(strings.NewReader("data: 0123456789\n\n"), 8).Next()
	if !errors.Is(err, ErrEventTooLarge) || !strings.Contains(err.Error(), "larger than 8 bytes") {
		t.Fatalf("err = %v", err)
	}
}

func TestReaderLargeEvent(t *testing.T) {
	// Events far larger than the initial buffer, with every line ending.
	big := strings.Repeat("abcdefghij", 100_000)
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		in := "data: " + big + eol + "data: " + big + eol + eol + "data: small" + eol + eol
		got := readAll(t, strings.NewReader(in), 4<<20)
		want := result{Events: []Event{ev(big + "\n" + big), ev("small")}, End: "eof"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("eol %q: got %d events, end %s", eol, len(got.Events), got.End)
		}
	}
}

func TestReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(io.MultiReader(strings.NewReader("data: a\n\ndata: b\n"), iotest.ErrReader(boom)), 0)
	if e, err := r.Next(); err != nil || string(e.Data) != "a" {
		t.Fatalf("first = %q, %v", e.Data, err)
	}
	if _, err := r.Next(); err != boom {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, err := r.Next(); err != boom {
		t.Fatalf("second err = %v, want boom again", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestReaderNoProgress(t *testing.T) {
	if _, err := NewReader(zeroReader{}, 0).Next(); err != io.ErrNoProgress {
		t.Fatalf("err = %v", err)
	}
}

// TestReaderDispatchesWithoutReadingAhead checks that an event is returned
// as soon as its blank line has arrived, whatever the line endings: a live
// stream must not wait for the next event's bytes.
func TestReaderDispatchesWithoutReadingAhead(t *testing.T) {
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		pr, pw := io.Pipe()
		r := NewReader(pr, 0)
		got := make(chan string)
		go func() {
			for {
				e, err := r.Next()
				if err != nil {
					close(got)
					return
				}
				got <- string(e.Data)
			}
		}()
		wait := func(want string) {
			t.Helper()
			select {
			case d := <-got:
				if d != want {
					t.Fatalf("eol %q: got %q, want %q", eol, d, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("eol %q: event %s not dispatched before more input", eol, want)
			}
		}
		go pw.Write([]byte("data: 1" + eol + eol))
		wait("1")
		go func() {
			pw.Write([]byte("data: 2" + eol))
			pw.Write([]byte(eol))
		}()
		wait("2")
		pw.Close()
		if _, ok := <-got; ok {
			t.Fatalf("eol %q: extra event", eol)
		}
	}
}

func TestReaderDataIsCallers(t *testing.T) {
	r := NewReader(strings.NewReader("data: aaaa\n\ndata: bbbb\n\n"), 0)
	a, _ := r.Next()
	b, _ := r.Next()
	if string(a.Data) != "aaaa" || string(b.Data) != "bbbb" {
		t.Fatalf("events overwrote each other: %q %q", a.Data, b.Data)
	}
}

// TestReaderChunking feeds random streams whole, byte by byte and in random
// chunks, and checks every way yields the same result as a plain reference
// parser.
func TestReaderChunking(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		in := randomStream(rng)
		max := 0
		if i%4 == 0 {
			max = 1 + rng.IntN(200)
		}
		checkConsistent(t, in, max, rng)
	}
}

func checkConsistent(t *testing.T, in []byte, max int, rng *rand.Rand) {
	t.Helper()
	want := reference(in, max)
	ways := map[string]io.Reader{
		"whole":       bytes.NewReader(in),
		"byte-wise":   iotest.OneByteReader(bytes.NewReader(in)),
		"half-reads":  iotest.HalfReader(bytes.NewReader(in)),
		"data+EOF":    iotest.DataErrReader(bytes.NewReader(in)),
		"random-cuts": &chunkReader{data: in, rng: rng},
	}
	for name, r := range ways {
		got := readAll(t, r, max)
		if !reflect.DeepEqual(normalise(got), normalise(want)) {
			t.Fatalf("%s, max %d, input %q:\n got %s\nwant %s", name, max, in, show(got), show(want))
		}
	}
}

// chunkReader returns its data in chunks of random sizes.
type chunkReader struct {
	data []byte
	rng  *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(1+c.rng.IntN(16), len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

var streamPieces = []string{
	"data: ", "data:", "data", "event: ", "event:x", "id: ", "id:\x00", "retry: 5", ": c", ":", "x", "[DONE]", "{\"a\":1}",
	"\n", "\r\n", "\r", "\n\n", "\r\r", "\r\n\r\n", " ", "\xEF\xBB\xBF", "\xEF", "é", "data: " + strings.Repeat("z", 70),
}

func randomStream(rng *rand.Rand) []byte {
	var b []byte
	for range rng.IntN(40) {
		b = append(b, streamPieces[rng.IntN(len(streamPieces))]...)
	}
	return b
}

// reference is a deliberately plain reading of the standard's algorithm,
// working on the whole input at once.
func reference(in []byte, max int) result {
	if max <= 0 {
		max = DefaultMaxEventBytes
	}
	in = bytes.TrimPrefix(in, bom)
	var (
		res                result
		data               []byte
		hasData, inEvent   bool
		eventType, lastID  string
		size               int
		lines              [][]byte
		terminated         []bool
		start, i           int
		truncatedLastLine  bool
		unterminatedSuffix []byte
	)
	for i < len(in) {
		switch in[i] {
		case '\r':
			lines, terminated = append(lines, in[start:i]), append(terminated, true)
			if i+1 < len(in) && in[i+1] == '\n' {
				i++
			}
			start = i + 1
		case '\n':
			lines, terminated = append(lines, in[start:i]), append(terminated, true)
			start = i + 1
		}
		i++
	}
	if start < len(in) {
		unterminatedSuffix = in[start:]
		truncatedLastLine = true
	}
	for _, line := range lines {
		if len(line) > 0 {
			size += len(line) + 1
		}
		if size > max {
			res.End = "too-large"
			return res
		}
		if len(line) == 0 {
			size, inEvent = 0, false
			if hasData {
				res.Events = append(res.Events, Event{Data: append([]byte{}, data...), Event: eventType, ID: lastID})
			}
			data, hasData, eventType = nil, false, ""
			continue
		}
		if line[0] == ':' {
			continue
		}
		inEvent = true
		name, value := string(line), ""
		if k := bytes.IndexByte(line, ':'); k >= 0 {
			name, value = string(line[:k]), strings.TrimPrefix(string(line[k+1:]), " ")
		}
		switch name {
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data, hasData = append(data, value...), true
		case "event":
			eventType = value
		case "id":
			if !strings.Contains(value, "\x00") {
				lastID = value
			}
		}
	}
	switch {
	case truncatedLastLine && size+len(unterminatedSuffix) > max:
		res.End = "too-large"
	case inEvent || (truncatedLastLine && unterminatedSuffix[0] != ':'):
		res.End = "unexpected-eof"
	default:
		res.End = "eof"
	}
	return res
}

func TestWriteEvent(t *testing.T) {
	tests := []struct{ data, want string }{
		{"hello", "data: hello\n\n"},
		{"", "data: \n\n"},
		{"[DONE]", "data: [DONE]\n\n"},
		{"a\nb", "data: a\ndata: b\n\n"},
		{"a\n", "data: a\ndata: \n\n"},
		{"\n", "data: \ndata: \n\n"},
		{"a\r\nb\rc", "data: a\ndata: b\ndata: c\n\n"},
		{" lead", "data:  lead\n\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := WriteEvent(&b, []byte(tt.data)); err != nil {
			t.Fatal(err)
		}
		if b.String() != tt.want {
			t.Errorf("WriteEvent(%q) wrote %q, want %q", tt.data, b.String(), tt.want)
		}
		if got := string(AppendEvent([]byte("x"), []byte(tt.data))); got != "x"+tt.want {
			t.Errorf("AppendEvent(%q) = %q", tt.data, got)
		}
	}
}

func TestWriteEventRoundTrip(t *testing.T) {
	datas := []string{"", "x", " x", "a\nb", "\n\n", "{\"choices\":[{\"delta\":{\"content\":\"é\"}}]}", "[DONE]", ":not a comment", "data: nested"}
	var b bytes.Buffer
	for _, d := range datas {
		if err := WriteEvent(&b, []byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, &b, 0)
	if got.End != "eof" || len(got.Events) != len(datas) {
		t.Fatalf("got %s", show(got))
	}
	for i, d := range datas {
		if string(got.Events[i].Data) != d {
			t.Errorf("event %d: %q, want %q", i, got.Events[i].Data, d)
		}
	}
}

type shortWriter struct{ err error }

func (w shortWriter) Write(p []byte) (int, error) { return 0, w.err }

func TestWriteEventError(t *testing.T) {
	boom := errors.New("boom")
	if err := WriteEvent(shortWriter{boom}, []byte("x")); err != boom {
		t.Fatalf("err = %v", err)
	}
}

func TestWriteEventAllocs(t *testing.T) {
	data := []byte(`{"id":"chatcmpl-1","choices":[{"delta":{"content":"hi"}}]}`)
	allocs := testing.AllocsPerRun(100, func() { _ = WriteEvent(io.Discard, data) })
	if allocs > 0 {
		t.Errorf("WriteEvent allocates %v times per call", allocs)
	}
}

func TestReaderAllocsPerEvent(t *testing.T) {
	in := openAIStream(100, "\n")
	allocs := testing.AllocsPerRun(20, func() {
		r := NewReader(bytes.NewReader(in), 0)
		for {
			if _, err := r.Next(); err != nil {
				break
			}
		}
	})
	// One allocation per event (its Data) plus a few for the Reader itself.
	if perEvent := allocs / 102; perEvent > 1.1 {
		t.Errorf("%.2f allocations per event (%v for 102 events)", perEvent, allocs)
	}
}
