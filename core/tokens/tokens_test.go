package tokens

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestForModel(t *testing.T) {
	tests := []struct {
		model string
		want  Encoding
	}{
		{"gpt-4o", O200kBase},
		{"gpt-4o-mini-2024-07-18", O200kBase},
		{"chatgpt-4o-latest", O200kBase},
		{"gpt-4.1-nano", O200kBase},
		{"gpt-4.5-preview", O200kBase},
		{"gpt-5", O200kBase},
		{"gpt-5-mini", O200kBase},
		{"o1", O200kBase},
		{"o1-mini", O200kBase},
		{"o3-mini-2025-01-31", O200kBase},
		{"o4-mini", O200kBase},
		{"gpt-4", Cl100kBase},
		{"gpt-4-0613", Cl100kBase},
		{"gpt-4-turbo", Cl100kBase},
		{"gpt-4-32k", Cl100kBase},
		{"gpt-3.5-turbo", Cl100kBase},
		{"gpt-3.5-turbo-16k", Cl100kBase},
		{"text-embedding-3-small", Cl100kBase},
		{"text-embedding-ada-002", Cl100kBase},
		// Azure spellings and prefixes.
		{"gpt-35-turbo", Cl100kBase},
		{"gpt-35-turbo-16k", Cl100kBase},
		{"azure/gpt-35-turbo", Cl100kBase},
		{"azure/gpt-4o", O200kBase},
		{"openai/gpt-4", Cl100kBase},
		{"GPT-4", Cl100kBase},
		{"ft:gpt-3.5-turbo-0125:acme::abc123", Cl100kBase},
		{"ft:gpt-4o-mini-2024-07-18:acme::abc123", O200kBase},
		// Unknown models get the current encoding.
		{"my-deployment", O200kBase},
		{"", O200kBase},
	}
	for _, tt := range tests {
		if got := ForModel(tt.model); got != tt.want {
			t.Errorf("ForModel(%q) = %s, want %s", tt.model, got, tt.want)
		}
	}
}

// The token IDs and counts below are those OpenAI's cookbook ("How to count
// tokens with tiktoken") prints for these strings.
func TestKnownEncodings(t *testing.T) {
	tests := []struct {
		enc  Encoding
		text string
		ids  []uint
	}{
		{O200kBase, "tiktoken is great!", []uint{83, 8251, 2488, 382, 2212, 0}},
		{Cl100kBase, "antidisestablishmentarianism", []uint{519, 85342, 34500, 479, 8997, 2191}},
		{O200kBase, "antidisestablishmentarianism", []uint{493, 129901, 376, 160388, 21203, 2367}},
		{Cl100kBase, "2 + 2 = 4", []uint{17, 489, 220, 17, 284, 220, 19}},
		{O200kBase, "2 + 2 = 4", []uint{17, 659, 220, 17, 314, 220, 19}},
		{Cl100kBase, "お誕生日おめでとう", []uint{33334, 45918, 243, 21990, 9080, 33334, 62004, 16556, 78699}},
		{O200kBase, "お誕生日おめでとう", []uint{8930, 9697, 243, 128225, 8930, 17693, 4344, 48669}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.enc, tt.text), func(t *testing.T) {
			c, err := codecs[tt.enc].get()
			if err != nil {
				t.Fatal(err)
			}
			ids, _, err := c.Encode(tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids, tt.ids) {
				t.Errorf("Encode = %v, want %v", ids, tt.ids)
			}
			if got := tt.enc.Count(tt.text); got != len(tt.ids) {
				t.Errorf("Count = %d, want %d", got, len(tt.ids))
			}
		})
	}
}

func TestCountText(t *testing.T) {
	tests := []struct {
		model string
		text  string
		want  int
	}{
		{"gpt-4o", "hello world", 2},
		{"gpt-4", "hello world", 2},
		{"gpt-4o", "", 0},
		{"gpt-3.5-turbo", "tiktoken is great!", 6},
		// The encodings differ on Japanese (see TestKnownEncodings).
		{"gpt-4o-mini", "お誕生日おめでとう", 8},
		{"azure/gpt-35-turbo", "お誕生日おめでとう", 9},
		// Special tokens are ordinary text in a message.
		{"gpt-4o", "<|endoftext|>", O200kBase.Count("<|") + O200kBase.Count("endoftext") + O200kBase.Count("|>")},
	}
	for _, tt := range tests {
		if got := CountText(tt.model, tt.text); got != tt.want {
			t.Errorf("CountText(%q, %q) = %d, want %d", tt.model, tt.text, got, tt.want)
		}
	}
}

func TestCountInvalidUTF8(t *testing.T) {
	// Bytes that are not UTF-8 still encode (byte-level BPE), one token or
	// more each; the count must not panic or fall to zero.
	if n := CountText("gpt-4o", "a\xff\xfeb"); n < 2 {
		t.Errorf("CountText of invalid UTF-8 = %d, want at least 2", n)
	}
}

func TestEstimateCompletion(t *testing.T) {
	text := `The weather in Paris is sunny.{"city":"Paris","unit":"celsius"}`
	if got, want := EstimateCompletion("gpt-4o", text), int64(CountText("gpt-4o", text)); got != want {
		t.Errorf("EstimateCompletion = %d, want %d", got, want)
	}
	if got := EstimateCompletion("gpt-4o", ""); got != 0 {
		t.Errorf("EstimateCompletion of nothing = %d, want 0", got)
	}
}

// englishText returns about n bytes of English prose.
func englishText(n int) string {
	const para = "A gateway sits between applications and the language models they call. " +
		"It checks each caller's key, picks a provider for the requested model, and " +
		"forwards the request, streaming the answer back as it arrives. Because every " +
		"request passes through it, the gateway is also the natural place to record " +
		"what was asked, what was answered, how many tokens were used and what that " +
		"cost, so that a team can later see where its money went and why. "
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(para)
	}
	return b.String()[:n]
}

func TestConcurrentCounting(t *testing.T) {
	text := englishText(2048)
	want := map[Encoding]int{O200kBase: O200kBase.Count(text), Cl100kBase: Cl100kBase.Count(text)}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 16 {
		wg.Go(func() {
			for j := range 20 {
				enc := O200kBase
				if (i+j)%2 == 1 {
					enc = Cl100kBase
				}
				if got := enc.Count(text); got != want[enc] {
					errs <- fmt.Sprintf("%s: %d, want %d", enc, got, want[enc])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestConcurrentFirstUse builds an encoder from many goroutines at once.
func TestConcurrentFirstUse(t *testing.T) {
	c := &codec{enc: Cl100kBase}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			enc, err := c.get()
			if err != nil {
				t.Error(err)
				return
			}
			if n, err := enc.Count("hello world"); err != nil || n != 2 {
				t.Errorf("Count = %d, %v", n, err)
			}
		})
	}
	wg.Wait()
}

func BenchmarkCountText(b *testing.B) {
	text := englishText(2048)
	for _, model := range []string{"gpt-4o", "gpt-4"} {
		b.Run(string(ForModel(model)), func(b *testing.B) {
			CountText(model, text) // build the encoder outside the timing
			b.SetBytes(int64(len(text)))
			b.ResetTimer()
			for b.Loop() {
				CountText(model, text)
			}
		})
	}
}
