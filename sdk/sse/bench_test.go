package sse

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// openAIStream returns a chat completion stream of n content chunks, a
// usage chunk and [DONE], with the given line ending.
func openAIStream(n int, eol string) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":"token%d "},"logprobs":null,"finish_reason":null}],"usage":null}`+eol+eol, i)
	}
	b.WriteString(`data: {"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":100,"total_tokens":112}}` + eol + eol)
	b.WriteString("data: [DONE]" + eol + eol)
	return b.Bytes()
}

func benchmarkReader(b *testing.B, in []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		r := NewReader(bytes.NewReader(in), 0)
		for {
			if _, err := r.Next(); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
}

func BenchmarkReaderLF(b *testing.B)   { benchmarkReader(b, openAIStream(1000, "\n")) }
func BenchmarkReaderCRLF(b *testing.B) { benchmarkReader(b, openAIStream(1000, "\r\n")) }
func BenchmarkReaderCR(b *testing.B)   { benchmarkReader(b, openAIStream(1000, "\r")) }

func BenchmarkReaderMultiLine(b *testing.B) {
	var in bytes.Buffer
	for range 1000 {
		in.WriteString("data: first line\ndata: second line\ndata: third line\n\n")
	}
	benchmarkReader(b, in.Bytes())
}

func BenchmarkReaderLargeEvents(b *testing.B) {
	var in bytes.Buffer
	for range 10 {
		in.WriteString("data: " + strings.Repeat("x", 256<<10) + "\n\n")
	}
	benchmarkReader(b, in.Bytes())
}

func BenchmarkWriteEvent(b *testing.B) {
	data := []byte(`{"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"token "},"finish_reason":null}]}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := WriteEvent(io.Discard, data); err != nil {
			b.Fatal(err)
		}
	}
}
