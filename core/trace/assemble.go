package trace

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sort"

	"github.com/loom-runtime/loom/sdk/sse"
)

// chunk is the part of a chat.completion.chunk the assembler reads.
type chunk struct {
	ID                string          `json:"id"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Usage             json.RawMessage `json:"usage"`
	Choices           []struct {
		Index int `json:"index"`
		Delta struct {
			Role      string  `json:"role"`
			Content   *string `json:"content"`
			Refusal   *string `json:"refusal"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Error json.RawMessage `json:"error"`
}

type toolCall struct {
	ID       string `json:"id,omitempty"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type choice struct {
	Index   int `json:"index"`
	Message struct {
		Role      string     `json:"role"`
		Content   *string    `json:"content"`
		Refusal   *string    `json:"refusal,omitempty"`
		ToolCalls []toolCall `json:"tool_calls,omitempty"`
	} `json:"message"`
	FinishReason *string `json:"finish_reason"`

	content, refusal bytes.Buffer
	tools            map[int]*toolCall
}

// assembled is the display form of a streamed answer: a chat.completion
// built from the chunks, plus what Loom knows about how it ended.
type assembled struct {
	ID                string          `json:"id,omitempty"`
	Object            string          `json:"object"`
	Created           int64           `json:"created,omitempty"`
	Model             string          `json:"model,omitempty"`
	SystemFingerprint string          `json:"system_fingerprint,omitempty"`
	Choices           []*choice       `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
	Loom              struct {
		Events    int             `json:"events"`
		Done      bool            `json:"done"`
		Truncated bool            `json:"response_truncated,omitempty"`
		Error     json.RawMessage `json:"error,omitempty"`
	} `json:"x_loom"`
}

// Assemble rebuilds the final message of a chat completion stream from the
// SSE stream as relayed. It returns the message as JSON and the completion
// text (content, refusal and tool-call arguments, for token estimation).
// A stream cut short gives the message as far as it got.
func Assemble(stream []byte, truncated bool) (message []byte, completion string) {
	out := assembled{Object: "chat.completion"}
	out.Loom.Truncated = truncated
	choices := map[int]*choice{}
	rd := sse.NewReader(bytes.NewReader(stream), len(stream)+1)
	for {
		ev, err := rd.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				out.Loom.Truncated = out.Loom.Truncated || truncated
			}
			break
		}
		out.Loom.Events++
		if string(ev.Data) == "[DONE]" {
			out.Loom.Done = true
			continue
		}
		var c chunk
		if json.Unmarshal(ev.Data, &c) != nil {
			continue
		}
		if len(c.Error) > 0 {
			out.Loom.Error = c.Error
			continue
		}
		if out.ID == "" {
			out.ID, out.Created, out.Model, out.SystemFingerprint = c.ID, c.Created, c.Model, c.SystemFingerprint
		}
		if len(c.Usage) > 0 && string(c.Usage) != "null" {
			out.Usage = c.Usage
		}
		for _, d := range c.Choices {
			ch, ok := choices[d.Index]
			if !ok {
				ch = &choice{Index: d.Index, tools: map[int]*toolCall{}}
				ch.Message.Role = "assistant"
				choices[d.Index] = ch
			}
			if d.Delta.Role != "" {
				ch.Message.Role = d.Delta.Role
			}
			if d.Delta.Content != nil {
				ch.content.WriteString(*d.Delta.Content)
			}
			if d.Delta.Refusal != nil {
				ch.refusal.WriteString(*d.Delta.Refusal)
			}
			for _, tc := range d.Delta.ToolCalls {
				t, ok := ch.tools[tc.Index]
				if !ok {
					t = &toolCall{Type: "function"}
					ch.tools[tc.Index] = t
				}
				if tc.ID != "" {
					t.ID = tc.ID
				}
				if tc.Type != "" {
					t.Type = tc.Type
				}
				t.Function.Name += tc.Function.Name
				t.Function.Arguments += tc.Function.Arguments
			}
			if d.FinishReason != nil {
				ch.FinishReason = d.FinishReason
			}
		}
	}
	var text bytes.Buffer
	idx := make([]int, 0, len(choices))
	for i := range choices {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		ch := choices[i]
		content := ch.content.String()
		ch.Message.Content = &content
		text.WriteString(content)
		if ch.refusal.Len() > 0 {
			r := ch.refusal.String()
			ch.Message.Refusal = &r
			text.WriteString(r)
		}
		tidx := make([]int, 0, len(ch.tools))
		for j := range ch.tools {
			tidx = append(tidx, j)
		}
		sort.Ints(tidx)
		for _, j := range tidx {
			ch.Message.ToolCalls = append(ch.Message.ToolCalls, *ch.tools[j])
			text.WriteString(ch.tools[j].Function.Name)
			text.WriteString(ch.tools[j].Function.Arguments)
		}
		out.Choices = append(out.Choices, ch)
	}
	if out.Choices == nil {
		out.Choices = []*choice{}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, text.String()
	}
	return b, text.String()
}
