package sse

import (
	"bytes"
	"reflect"
	"testing"
	"testing/iotest"
)

// FuzzReader checks that no input makes the Reader panic, that reading an
// input whole and byte by byte gives the same result, and that both agree
// with the reference parser, with the default limit and a tiny one.
func FuzzReader(f *testing.F) {
	f.Add([]byte("data: hello\n\n"))
	f.Add([]byte("data: a\r\ndata: b\r\rdata: c\n\n"))
	f.Add([]byte("\xEF\xBB\xBFevent: x\nid: 1\ndata\n\n: c\n"))
	f.Add(openAIStream(3, "\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, max := range []int{0, 32} {
			whole := readAll(t, bytes.NewReader(in), max)
			bytewise := readAll(t, iotest.OneByteReader(bytes.NewReader(in)), max)
			if !reflect.DeepEqual(whole, bytewise) {
				t.Fatalf("max %d, input %q:\nwhole     %s\nbyte-wise %s", max, in, show(whole), show(bytewise))
			}
			if want := reference(in, max); !reflect.DeepEqual(normalise(whole), normalise(want)) {
				t.Fatalf("max %d, input %q:\n got %s\nwant %s", max, in, show(whole), show(want))
			}
		}
	})
}
