package request

import "testing"

var benchBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about the sea, please, in plain words."}],"temperature":0.7,"max_tokens":64}`)

// BenchmarkPeek is the per-request scan of a typical chat body.
func BenchmarkPeek(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		p, err := Peek(benchBody)
		if err != nil || p.Model != "gpt-4o-mini" {
			b.Fatal(p, err)
		}
	}
}
