package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// The counting recipe for chat messages, as published in OpenAI's cookbook
// ("How to count tokens with tiktoken") for gpt-3.5-turbo-0125, gpt-4,
// gpt-4o and gpt-4o-mini: every message costs its text plus a fixed
// overhead, a name one token more, and the reply is primed with three.
const (
	// TokensPerMessage frames every message (<|start|>{role}…<|end|>).
	TokensPerMessage = 3
	// TokensPerName is added for a message that has a name.
	TokensPerName = 1
	// TokensReplyPriming primes the reply (<|start|>assistant<|message|>).
	TokensReplyPriming = 3
)

// Images are estimated without looking at them: a request carries an image's
// URL or data, not its size. OpenAI documents 85 tokens for an image in low
// detail and, for high detail, 85 plus 170 for every 512-pixel tile of the
// scaled image, so a 1024×1024 image costs 765. Images in high or automatic
// detail are counted as such a 1024×1024 image.
const (
	ImageLowDetailTokens  = 85
	ImageHighDetailTokens = 765
)

// EstimatePrompt estimates the prompt tokens of a request body for model.
//
// For a chat completion request ("messages"), each message counts
// TokensPerMessage plus the tokens of its role, its content, its
// tool_call_id and, for a message with a name, the name plus TokensPerName;
// the request adds TokensReplyPriming. That is OpenAI's recipe, which its
// cookbook shows matching the API's count for plain text messages. Beyond
// it the result is an estimate:
//
//   - content given as an array of parts counts its text (and refusal)
//     parts; image parts count ImageLowDetailTokens in low detail and
//     ImageHighDetailTokens otherwise; audio and file parts count nothing;
//   - tool calls in assistant messages count their function names and
//     arguments as text;
//   - tool and function definitions ("tools", "functions") count their JSON
//     as text, which OpenAI renders differently but of similar size;
//   - response_format schemas and other options count nothing.
//
// For an embeddings request ("input" and no "messages") the inputs' tokens
// are counted without overhead: a string or strings are encoded, token
// arrays are counted as given.
//
// An error is returned for a body that is not a JSON object, or has neither
// messages nor input, or whose messages are malformed.
func EstimatePrompt(model string, body []byte) (int64, error) {
	var req struct {
		Messages  json.RawMessage   `json:"messages"`
		Tools     []json.RawMessage `json:"tools"`
		Functions []json.RawMessage `json:"functions"`
		Input     json.RawMessage   `json:"input"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return 0, fmt.Errorf("estimate prompt tokens: %w", err)
	}
	enc := ForModel(model)
	switch {
	case !isNull(req.Messages):
		return chatPrompt(enc, req.Messages, req.Tools, req.Functions)
	case !isNull(req.Input):
		return embeddingInput(enc, req.Input)
	default:
		return 0, errors.New("estimate prompt tokens: the body has neither messages nor input")
	}
}

// message is the part of a chat message that is counted.
type message struct {
	Role         string          `json:"role"`
	Name         string          `json:"name"`
	Content      json.RawMessage `json:"content"`
	ToolCallID   string          `json:"tool_call_id"`
	ToolCalls    []toolCall      `json:"tool_calls"`
	FunctionCall *functionCall   `json:"function_call"`
}

type toolCall struct {
	Function functionCall `json:"function"`
}

type functionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// part is one element of an array content.
type part struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	Refusal  string `json:"refusal"`
	ImageURL *struct {
		Detail string `json:"detail"`
	} `json:"image_url"`
}

func chatPrompt(enc Encoding, rawMessages json.RawMessage, tools, functions []json.RawMessage) (int64, error) {
	var messages []message
	if err := json.Unmarshal(rawMessages, &messages); err != nil {
		return 0, fmt.Errorf("estimate prompt tokens: messages: %w", err)
	}
	var n int64
	for i, m := range messages {
		n += TokensPerMessage
		n += int64(enc.Count(m.Role))
		if m.Name != "" {
			n += int64(enc.Count(m.Name)) + TokensPerName
		}
		c, err := contentTokens(enc, m.Content)
		if err != nil {
			return 0, fmt.Errorf("estimate prompt tokens: messages[%d].content: %w", i, err)
		}
		n += c
		n += int64(enc.Count(m.ToolCallID))
		for _, tc := range m.ToolCalls {
			n += int64(enc.Count(tc.Function.Name) + enc.Count(tc.Function.Arguments))
		}
		if fc := m.FunctionCall; fc != nil {
			n += int64(enc.Count(fc.Name) + enc.Count(fc.Arguments))
		}
	}
	n += TokensReplyPriming
	for _, def := range tools {
		n += jsonTokens(enc, def)
	}
	for _, def := range functions {
		n += jsonTokens(enc, def)
	}
	return n, nil
}

// contentTokens counts a message's content: a string, an array of parts,
// or null.
func contentTokens(enc Encoding, raw json.RawMessage) (int64, error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return 0, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		return int64(enc.Count(s)), nil
	case '[':
		var parts []part
		if err := json.Unmarshal(raw, &parts); err != nil {
			return 0, err
		}
		var n int64
		for _, p := range parts {
			switch p.Type {
			case "text":
				n += int64(enc.Count(p.Text))
			case "refusal":
				n += int64(enc.Count(p.Refusal))
			case "image_url":
				if p.ImageURL != nil && p.ImageURL.Detail == "low" {
					n += ImageLowDetailTokens
				} else {
					n += ImageHighDetailTokens
				}
			}
		}
		return n, nil
	default:
		return 0, fmt.Errorf("expected a string, an array of parts or null")
	}
}

// embeddingInput counts an embeddings request's input: a string, an array
// of strings, an array of token IDs or an array of such arrays.
func embeddingInput(enc Encoding, raw json.RawMessage) (int64, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return int64(enc.Count(s)), nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return 0, errors.New("estimate prompt tokens: input: expected a string or an array")
	}
	var n int64
	for i, item := range items {
		var s string
		var ids []json.RawMessage
		switch {
		case json.Unmarshal(item, &s) == nil:
			n += int64(enc.Count(s))
		case json.Unmarshal(item, &ids) == nil:
			n += int64(len(ids))
		default:
			var id json.Number
			if err := json.Unmarshal(item, &id); err != nil {
				return 0, fmt.Errorf("estimate prompt tokens: input[%d]: expected a string, a token or an array of tokens", i)
			}
			n++
		}
	}
	return n, nil
}

// jsonTokens counts a JSON value's compact text.
func jsonTokens(enc Encoding, raw json.RawMessage) int64 {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return int64(enc.Count(string(raw)))
	}
	return int64(enc.Count(buf.String()))
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}
