// Package tokens estimates token counts with OpenAI's byte-pair encodings,
// for requests whose provider reports no usage (a stream cut off before its
// usage chunk, or a provider that sends none).
//
// The vocabularies (o200k_base and cl100k_base) are compiled into the binary
// by github.com/tiktoken-go/tokenizer: nothing is downloaded at run time.
// Each encoder is built once, on first use, and is safe for concurrent use.
//
// Counts of plain text are exact for the encoding chosen. Counts of whole
// requests follow OpenAI's published recipe for chat messages and are
// estimates beyond it: see EstimatePrompt.
package tokens

import (
	"strings"
	"sync"

	"github.com/tiktoken-go/tokenizer"
)

// Encoding names a byte-pair encoding.
type Encoding string

// The encodings Loom estimates with.
const (
	// O200kBase is the encoding of gpt-4o, gpt-4.1, gpt-5 and the o-series.
	O200kBase Encoding = "o200k_base"
	// Cl100kBase is the encoding of gpt-4, gpt-3.5-turbo and the
	// text-embedding models.
	Cl100kBase Encoding = "cl100k_base"
)

// ForModel returns the encoding of model. The model name is read the way
// the price catalog reads it: case-insensitively, without a provider prefix
// ("azure/", "openai/"), with Azure's "gpt-35" spelled "gpt-3.5" and with a
// fine-tuned model ("ft:gpt-4o-mini:…") read as its base model. Models that
// are not recognised get o200k_base, the encoding of every current OpenAI
// model.
func ForModel(model string) Encoding {
	m := normalise(model)
	switch {
	case hasAnyPrefix(m, "gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4"):
		return O200kBase
	case hasAnyPrefix(m, "gpt-4", "gpt-3.5", "text-embedding-"):
		return Cl100kBase
	default:
		return O200kBase
	}
}

func normalise(model string) string {
	m := strings.ToLower(strings.TrimSpace(model))
	m = strings.TrimPrefix(m, "ft:")
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	if rest, ok := strings.CutPrefix(m, "gpt-35"); ok {
		m = "gpt-3.5" + rest
	}
	return m
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// codec is one lazily built encoder.
type codec struct {
	once  sync.Once
	enc   Encoding
	codec tokenizer.Codec
	err   error
}

var codecs = map[Encoding]*codec{
	O200kBase:  {enc: O200kBase},
	Cl100kBase: {enc: Cl100kBase},
}

// get returns the encoder for enc, building it on first use. Building
// o200k_base takes some tens of milliseconds and memory for its 200,000-entry
// vocabulary; cl100k_base about half that.
func (c *codec) get() (tokenizer.Codec, error) {
	c.once.Do(func() {
		c.codec, c.err = tokenizer.Get(tokenizer.Encoding(c.enc))
	})
	return c.codec, c.err
}

// Count returns the number of tokens text encodes to. Special-token text
// such as "<|endoftext|>" is counted as ordinary text, as it is when it
// appears in a message. An unknown encoding counts as o200k_base.
func (e Encoding) Count(text string) int {
	if text == "" {
		return 0
	}
	c, ok := codecs[e]
	if !ok {
		c = codecs[O200kBase]
	}
	enc, err := c.get()
	if err == nil {
		var n int
		if n, err = enc.Count(text); err == nil {
			return n
		}
	}
	// Not expected with the embedded vocabularies (the encoder accepts any
	// bytes); fall back to OpenAI's rule of thumb of four bytes a token.
	return (len(text) + 3) / 4
}

// CountText returns the number of tokens text encodes to with model's
// encoding.
func CountText(model, text string) int {
	return ForModel(model).Count(text)
}

// EstimateCompletion estimates the completion tokens of a response from its
// assembled text: the content, plus the arguments of any tool calls, joined
// by the caller. Reasoning tokens, which a response does not show, cannot be
// estimated and are not included.
func EstimateCompletion(model string, text string) int64 {
	return int64(CountText(model, text))
}
