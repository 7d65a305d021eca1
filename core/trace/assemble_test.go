package trace

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/loom-runtime/loom/sdk/sse"
)

func sseOf(events ...string) []byte {
	var b []byte
	for _, e := range events {
		b = sse.AppendEvent(b, []byte(e))
	}
	return b
}

func TestAssemble(t *testing.T) {
	stream := sseOf(
		`{"id":"c1","created":5,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`,
		`{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}`,
		`{"id":"c1","choices":[{"index":0,"delta":{"content":"lo"}},{"index":1,"delta":{"content":"Bonjour"}}]}`,
		`{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"ci"}}]}}]}`,
		`{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}}]}}]}`,
		`{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"},{"index":1,"delta":{},"finish_reason":"stop"}]}`,
		`{"id":"c1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}`,
		`[DONE]`,
	)
	msg, text := Assemble(stream, false)
	var m struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Index   int `json:"index"`
			Message struct {
				Role      string `json:"role"`
				Content   string `json:"content"`
				ToolCalls []struct {
					ID       string `json:"id"`
					Function struct{ Name, Arguments string }
				} `json:"tool_calls"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
		Loom struct {
			Events int  `json:"events"`
			Done   bool `json:"done"`
		} `json:"x_loom"`
	}
	if err := json.Unmarshal(msg, &m); err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
	if m.ID != "c1" || m.Object != "chat.completion" || m.Model != "gpt-4o-2024-08-06" || len(m.Choices) != 2 {
		t.Fatalf("assembled %s", msg)
	}
	c0 := m.Choices[0]
	if c0.Message.Content != "Hello" || c0.FinishReason != "tool_calls" || len(c0.Message.ToolCalls) != 1 ||
		c0.Message.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` || c0.Message.ToolCalls[0].ID != "call_1" {
		t.Fatalf("choice 0: %+v", c0)
	}
	if m.Choices[1].Message.Content != "Bonjour" || m.Usage.TotalTokens != 13 || m.Loom.Events != 8 || !m.Loom.Done {
		t.Fatalf("assembled %s", msg)
	}
	for _, want := range []string{"Hello", "Bonjour", "get_weather", "Paris"} {
		if !strings.Contains(text, want) {
			t.Fatalf("completion text %q lacks %q", text, want)
		}
	}
}

func TestAssembleCutStream(t *testing.T) {
	stream := sseOf(
		`{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":"Par"}}]}`,
		`{"error":{"message":"upstream cut","type":"server_error","code":"upstream_bad_response"}}`,
	)
	msg, text := Assemble(append(stream, []byte("data: {\"partial")...), true)
	if text != "Par" || !strings.Contains(string(msg), `"done":false`) || !strings.Contains(string(msg), `"response_truncated":true`) ||
		!strings.Contains(string(msg), "upstream cut") {
		t.Fatalf("cut stream assembled to %s / %q", msg, text)
	}
	if msg, _ := Assemble(nil, false); !strings.Contains(string(msg), `"choices":[]`) {
		t.Fatalf("empty stream: %s", msg)
	}
}
