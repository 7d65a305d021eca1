package tokens

import (
	"strings"
	"testing"
)

// cookbookConversation is the example conversation of OpenAI's cookbook
// ("How to count tokens with tiktoken"), for which the cookbook shows the
// API counting 129 prompt tokens on gpt-3.5-turbo and gpt-4, and 124 on
// gpt-4o and gpt-4o-mini.
const cookbookConversation = `{
  "model": "gpt-4o",
  "messages": [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
  ],
  "temperature": 0,
  "max_tokens": 1
}`

func TestEstimatePromptCookbook(t *testing.T) {
	for model, want := range map[string]int64{
		"gpt-3.5-turbo":      129,
		"gpt-4-0613":         129,
		"gpt-4":              129,
		"azure/gpt-35-turbo": 129,
		"gpt-4o":             124,
		"gpt-4o-mini":        124,
	} {
		got, err := EstimatePrompt(model, []byte(cookbookConversation))
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if got != want {
			t.Errorf("EstimatePrompt(%s) = %d, want %d", model, got, want)
		}
	}
}

func TestEstimatePrompt(t *testing.T) {
	c := func(s string) int64 { return int64(CountText("gpt-4o", s)) }
	tool := `{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}`
	tests := []struct {
		name string
		body string
		want int64
	}{
		{
			name: "one user message",
			body: `{"messages":[{"role":"user","content":"hello world"}]}`,
			// 3 + "user" (1) + "hello world" (2) + 3
			want: 3 + 1 + 2 + 3,
		},
		{
			name: "no messages",
			body: `{"messages":[]}`,
			want: 3,
		},
		{
			name: "text parts",
			body: `{"messages":[{"role":"user","content":[{"type":"text","text":"hello world"},{"type":"text","text":"tiktoken is great!"}]}]}`,
			want: 3 + 1 + 2 + 6 + 3,
		},
		{
			name: "image parts",
			body: `{"messages":[{"role":"user","content":[
				{"type":"text","text":"hello world"},
				{"type":"image_url","image_url":{"url":"https://example.com/a.png","detail":"low"}},
				{"type":"image_url","image_url":{"url":"https://example.com/b.png","detail":"high"}},
				{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},
				{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}
			]}]}`,
			want: 3 + 1 + 2 + ImageLowDetailTokens + 2*ImageHighDetailTokens + 3,
		},
		{
			name: "null content, tool calls and a tool reply",
			body: `{"messages":[
				{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
				{"role":"tool","tool_call_id":"call_1","content":"sunny"}
			]}`,
			want: 3 + c("assistant") + c("get_weather") + c(`{"city":"Paris"}`) +
				3 + c("tool") + c("call_1") + c("sunny") + 3,
		},
		{
			name: "legacy function call",
			body: `{"messages":[{"role":"assistant","function_call":{"name":"f","arguments":"{}"}}]}`,
			want: 3 + c("assistant") + c("f") + c("{}") + 3,
		},
		{
			name: "tool definitions count as compact JSON",
			body: `{"messages":[{"role":"user","content":"hello world"}],"tools":[` + strings.ReplaceAll(tool, ",", ", ") + `]}`,
			want: 3 + 1 + 2 + 3 + c(tool),
		},
		{
			name: "legacy functions",
			body: `{"messages":[{"role":"user","content":"hello world"}],"functions":[{"name":"f","parameters":{}}]}`,
			want: 3 + 1 + 2 + 3 + c(`{"name":"f","parameters":{}}`),
		},
		{
			name: "embeddings string",
			body: `{"model":"text-embedding-3-small","input":"hello world"}`,
			want: 2,
		},
		{
			name: "embeddings strings",
			body: `{"input":["hello world","tiktoken is great!"]}`,
			want: 2 + 6,
		},
		{
			name: "embeddings token arrays",
			body: `{"input":[[1,2,3],[4,5]]}`,
			want: 5,
		},
		{
			name: "embeddings one token array",
			body: `{"input":[1,2,3,4]}`,
			want: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EstimatePrompt("gpt-4o", []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("EstimatePrompt = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestEstimatePromptErrors(t *testing.T) {
	for _, body := range []string{
		``,
		`not json`,
		`[]`,
		`{}`,
		`{"messages":null}`,
		`{"messages":"hello"}`,
		`{"messages":[{"role":"user","content":42}]}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":7}]}]}`,
		`{"input":true}`,
		`{"input":[true]}`,
	} {
		if n, err := EstimatePrompt("gpt-4o", []byte(body)); err == nil {
			t.Errorf("EstimatePrompt(%q) = %d, want an error", body, n)
		}
	}
}
