package request

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"unicode/utf8"
)

func TestPeek(t *testing.T) {
	tests := []struct {
		name                           string
		body                           string
		model                          string
		stream, usage, msgs, input, ok bool
		code                           string
	}{
		{name: "minimal chat", body: `{"model":"gpt-4o","messages":[]}`, model: "gpt-4o", msgs: true, ok: true},
		{name: "stream with usage", body: `{"messages":[{"role":"user","content":"}{"}],"stream":true,"stream_options":{"include_usage":true},"model":"m"}`,
			model: "m", stream: true, usage: true, msgs: true, ok: true},
		{name: "whitespace everywhere", body: " \n{ \"model\" : \"a b\" ,\t\"stream\" : false , \"messages\" : [ ] } \n", model: "a b", msgs: true, ok: true},
		{name: "escaped key", body: `{"mod\u0065l":"x","messages":[]}`, model: "x", msgs: true, ok: true},
		{name: "escaped value", body: `{"model":"a\"b\\c\u00e9","messages":[]}`, model: "a\"b\\c\u00e9", msgs: true, ok: true},
		{name: "nested model ignored", body: `{"metadata":{"model":"inner"},"model":"outer","messages":[{"model":"x"}]}`, model: "outer", msgs: true, ok: true},
		{name: "unknown fields", body: `{"model":"m","messages":[],"x_custom":{"a":[1,2,{"b":null}]},"n":1.5e3}`, model: "m", msgs: true, ok: true},
		{name: "embeddings", body: `{"model":"text-embedding-3-small","input":"hi"}`, model: "text-embedding-3-small", input: true, ok: true},
		{name: "duplicate model: last wins", body: `{"model":"a","model":"b","messages":[]}`, model: "b", msgs: true, ok: true},
		{name: "malformed", body: `{"model":`, code: "invalid_json"},
		{name: "trailing garbage", body: `{"model":"m"} x`, code: "invalid_json"},
		{name: "empty body", body: ``, code: "invalid_json"},
		{name: "array body", body: `[1,2]`, code: "invalid_type"},
		{name: "string body", body: `"hello"`, code: "invalid_type"},
		{name: "invalid utf8 is still JSON", body: "{\"model\":\"m\xff\",\"messages\":[]}", code: "invalid_json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Peek([]byte(tt.body))
			if tt.code != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != tt.code {
					t.Fatalf("Peek error %v, want code %s", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Model != tt.model || p.Stream != tt.stream || p.IncludeUsage != tt.usage || p.HasMessages != tt.msgs || p.HasInput != tt.input {
				t.Fatalf("got %+v", p)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name, body, param, code string
		embeddings              bool
	}{
		{"ok", `{"model":"m","messages":[]}`, "", "", false},
		{"no model", `{"messages":[]}`, "model", "missing_required_parameter", false},
		{"empty model", `{"model":"","messages":[]}`, "model", "missing_required_parameter", false},
		{"model number", `{"model":4,"messages":[]}`, "model", "invalid_type", false},
		{"model null", `{"model":null,"messages":[]}`, "model", "invalid_type", false},
		{"no messages", `{"model":"m"}`, "messages", "missing_required_parameter", false},
		{"messages object", `{"model":"m","messages":{}}`, "messages", "invalid_type", false},
		{"stream string", `{"model":"m","messages":[],"stream":"yes"}`, "stream", "invalid_type", false},
		{"stream null ok", `{"model":"m","messages":[],"stream":null}`, "", "", false},
		{"stream_options without stream", `{"model":"m","messages":[],"stream_options":{"include_usage":true}}`, "stream_options", "invalid_value", false},
		{"embeddings ok", `{"model":"m","input":["a"]}`, "", "", true},
		{"embeddings no input", `{"model":"m"}`, "input", "missing_required_parameter", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Peek([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.embeddings {
				err = p.ValidateEmbeddings()
			} else {
				err = p.ValidateChat()
			}
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.code || e.Param != tt.param {
				t.Fatalf("got %#v, want %s on %s", err, tt.code, tt.param)
			}
		})
	}
}

func TestSetModelKeepsTheRest(t *testing.T) {
	body := []byte(`{ "temperature" : 0.2, "model" : "azure/my-deploy", "messages":[{"role":"user","content":"model"}], "z":1 }`)
	p, err := Peek(body)
	if err != nil {
		t.Fatal(err)
	}
	got := SetModel(body, p, "my-deploy")
	want := `{ "temperature" : 0.2, "model" : "my-deploy", "messages":[{"role":"user","content":"model"}], "z":1 }`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	for _, m := range []string{"a\"b", "ü\u2028", "\x01"} {
		out := SetModel(body, p, m)
		var v struct{ Model string }
		if err := json.Unmarshal(out, &v); err != nil || v.Model != m {
			t.Fatalf("SetModel(%q) gave %s (%v)", m, out, err)
		}
	}
}

func TestForceIncludeUsage(t *testing.T) {
	tests := []struct {
		name, body string
		want       map[string]any // stream_options after
		unchanged  bool
	}{
		{"absent", `{"model":"m","stream":true,"messages":[]}`, map[string]any{"include_usage": true}, false},
		{"already true", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, nil, true},
		{"false", `{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[]}`, map[string]any{"include_usage": true}, false},
		{"other options kept", `{"model":"m","stream":true,"stream_options":{"x":1},"messages":[]}`, map[string]any{"include_usage": true, "x": 1.0}, false},
		{"null", `{"model":"m","stream":true,"stream_options":null,"messages":[]}`, map[string]any{"include_usage": true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Peek([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			out, err := ForceIncludeUsage([]byte(tt.body), p)
			if err != nil {
				t.Fatal(err)
			}
			if tt.unchanged {
				if string(out) != tt.body {
					t.Fatalf("changed a body that already asked for usage: %s", out)
				}
				return
			}
			var v map[string]any
			if err := json.Unmarshal(out, &v); err != nil {
				t.Fatalf("result %s is not JSON: %v", out, err)
			}
			if !reflect.DeepEqual(v["stream_options"], tt.want) {
				t.Fatalf("stream_options = %v, want %v", v["stream_options"], tt.want)
			}
			var orig map[string]any
			json.Unmarshal([]byte(tt.body), &orig)
			delete(orig, "stream_options")
			delete(v, "stream_options")
			if !reflect.DeepEqual(orig, v) {
				t.Fatalf("other fields changed: %v vs %v", v, orig)
			}
		})
	}
	if _, err := ForceIncludeUsage([]byte(`{"model":"m","stream":true,"stream_options":[1]}`), mustPeek(t, `{"model":"m","stream":true,"stream_options":[1]}`)); err == nil {
		t.Fatal("array stream_options accepted")
	}
}

func mustPeek(t *testing.T, s string) Peeked {
	p, err := Peek([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FuzzPeek checks Peek against encoding/json: a UTF-8 body that
// encoding/json reads as an object is accepted, and model, stream,
// stream_options.include_usage, messages and input agree with what
// encoding/json finds at the top level (the last of duplicate keys wins,
// keys match exactly once unescaped); any other body is refused with an
// *Error. SetModel and ForceIncludeUsage keep the body valid JSON and
// change nothing but their one member.
func FuzzPeek(f *testing.F) {
	for _, s := range []string{`{"model":"m","messages":[]}`, `{"stream":true,"stream_options":{"include_usage":false}}`, `{"a":"\"}"}`, `[]`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Peek(b)
		var ref map[string]json.RawMessage
		refErr := json.Unmarshal(b, &ref)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Message == "" || e.Code == "" {
				t.Fatalf("Peek(%q) error %#v, want an *Error with a code and a message", b, err)
			}
			if refErr == nil && ref != nil && utf8.Valid(b) {
				t.Fatalf("Peek(%q) refuses an object encoding/json reads: %v", b, err)
			}
			return
		}
		if refErr != nil || ref == nil {
			t.Fatalf("Peek(%q) accepts what encoding/json does not read as an object (%v)", b, refErr)
		}
		checkPeeked(t, b, p, ref)

		if p.ModelIsStr {
			const model = "a\"b\\c\u00e9\u2028\x01</script>"
			out := SetModel(b, p, model)
			checkEdit(t, b, out, "model", func(p Peeked) bool { return p.ModelIsStr && p.Model == model })
		}
		if p.Stream {
			out, err := ForceIncludeUsage(b, p)
			so := ref["stream_options"]
			if err != nil {
				if so == nil || so[0] == '{' || string(so) == "null" {
					t.Fatalf("ForceIncludeUsage(%q): %v", b, err)
				}
				return
			}
			checkEdit(t, b, out, "stream_options", func(p Peeked) bool { return p.IncludeUsage && p.Stream })
		}
	})
}

// checkPeeked compares p with the top-level members encoding/json found.
func checkPeeked(t *testing.T, b []byte, p Peeked, ref map[string]json.RawMessage) {
	t.Helper()
	model, hasModel := ref["model"]
	var want Peeked
	if hasModel {
		want.HasModel, want.ModelIsStr = true, model[0] == '"'
		if want.ModelIsStr {
			if err := json.Unmarshal(model, &want.Model); err != nil {
				t.Fatal(err)
			}
		}
		if got := b[p.ModelSpan.Start:p.ModelSpan.End]; string(got) != string(model) {
			t.Fatalf("Peek(%q): model span holds %q, encoding/json says %q", b, got, model)
		}
	}
	if stream, ok := ref["stream"]; ok {
		want.HasStream = true
		want.Stream = string(stream) == "true"
		want.StreamIsBool = want.Stream || string(stream) == "false" || string(stream) == "null"
	}
	if so, ok := ref["stream_options"]; ok && so[0] == '{' {
		var opts map[string]json.RawMessage
		if err := json.Unmarshal(so, &opts); err != nil {
			t.Fatal(err)
		}
		want.IncludeUsage = string(opts["include_usage"]) == "true"
	}
	messages, hasMessages := ref["messages"]
	want.HasMessages, want.MessagesIsList = hasMessages, hasMessages && messages[0] == '['
	_, want.HasInput = ref["input"]
	got := p
	got.ModelSpan, got.StreamSpan, got.StreamOptionsSpan = Span{}, Span{}, Span{}
	if got != want {
		t.Fatalf("Peek(%q) =\n%+v\nencoding/json says\n%+v", b, got, want)
	}
}

// checkEdit checks that out, the body b with its member key edited, is
// valid JSON, that ok holds for its Peeked, and that no other top-level
// member changed.
func checkEdit(t *testing.T, b, out []byte, key string, ok func(Peeked) bool) {
	t.Helper()
	p, err := Peek(out)
	if err != nil {
		t.Fatalf("editing %s of %q gave %q: %v", key, b, out, err)
	}
	if !ok(p) {
		t.Fatalf("editing %s of %q gave %q: %+v", key, b, out, p)
	}
	var before, after map[string]json.RawMessage
	json.Unmarshal(b, &before)
	json.Unmarshal(out, &after)
	delete(before, key)
	delete(after, key)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("editing %s of %q changed other members: %q", key, b, out)
	}
}
