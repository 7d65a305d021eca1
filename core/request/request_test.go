package request

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
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

func TestRewriteModelKeepsTheRest(t *testing.T) {
	body := []byte(`{ "temperature" : 0.2, "model" : "azure/my-deploy", "messages":[{"role":"user","content":"model"}], "z":1 }`)
	p := mustPeek(t, string(body))
	got, err := Rewrite(body, p, Edit{Model: "my-deploy"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{ "temperature" : 0.2, "model" : "my-deploy", "messages":[{"role":"user","content":"model"}], "z":1 }`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	for _, m := range []string{"a\"b", "ü\u2028", "\x01"} {
		out, err := Rewrite(body, p, Edit{Model: m})
		var v struct{ Model string }
		if err != nil || json.Unmarshal(out, &v) != nil || v.Model != m {
			t.Fatalf("Rewrite(model %q) gave %s (%v)", m, out, err)
		}
	}
}

func TestRewriteIncludeUsage(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"absent", `{"model":"m","stream":true,"messages":[]}`, `{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}`},
		{"already true", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, ``},
		{"false", `{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[]}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`},
		{"other options kept byte for byte", `{"model":"m","stream":true,"stream_options":{ "x" : 1.50 },"messages":[]}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true, "x" : 1.50 },"messages":[]}`},
		{"empty object", `{"model":"m","stream":true,"stream_options":{ },"messages":[]}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true },"messages":[]}`},
		{"repeated key: every one set", `{"stream":true,"stream_options":{"include_usage":null,"include_usage":false}}`, `{"stream":true,"stream_options":{"include_usage":true,"include_usage":true}}`},
		{"null", `{"model":"m","stream":true,"stream_options":null,"messages":[]}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Rewrite([]byte(tt.body), mustPeek(t, tt.body), Edit{IncludeUsage: true})
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == "" {
				want = tt.body
			}
			if string(out) != want {
				t.Fatalf("got  %s\nwant %s", out, want)
			}
		})
	}
	for _, body := range []string{`{"model":"m","stream":true,"stream_options":[1]}`, `{"stream":true,"stream_options":"x"}`, `{"stream":true,"stream_options":0}`} {
		_, err := Rewrite([]byte(body), mustPeek(t, body), Edit{IncludeUsage: true})
		var e *Error
		if !errors.As(err, &e) || e.Param != "stream_options" || e.Code != "invalid_type" {
			t.Fatalf("%s: got %v, want invalid_type on stream_options", body, err)
		}
	}
}

// TestRewriteComposes applies a model rewrite and include_usage together
// over every order of the members Loom edits, with keys and values escaped
// or not and replacement models shorter and longer than the original: the
// result must be what decoding the body, editing it and encoding it again
// gives. (Applying the two edits one after the other, the second with the
// offsets of the original body, cut the body or panicked.)
func TestRewriteComposes(t *testing.T) {
	n := 0
	for _, body := range composedBodies() {
		p, err := Peek([]byte(body))
		if err != nil {
			t.Fatalf("Peek(%s): %v", body, err)
		}
		for _, model := range []string{"", "x", "echo-1", "a-much-longer-upstream-model-name-than-before", "esc\"aped/\u00e9"} {
			checkRewrite(t, []byte(body), p, Edit{Model: model, IncludeUsage: true})
			checkRewrite(t, []byte(body), p, Edit{Model: model})
			n++
		}
	}
	if n < 1000 {
		t.Fatalf("only %d combinations", n)
	}
}

// composedBodies builds chat bodies from every order of model, stream,
// stream_options and messages, with each key plain or escaped, and every
// shape of stream_options.
func composedBodies() []string {
	models := []string{`"echo/echo-1"`, `"e\u0063ho/echo-1"`, `"echo/\"quoted\""`}
	options := []string{"", `null`, `{}`, `{ }`, `{"include_usage":false}`, `{"include_usage":true}`, `{"x":1,"include_usage":false}`,
		`{"include_usage":false,"x":[1,{"a":"}"}]}`, `{"incl\u0075de_usage":false}`}
	var out []string
	for _, model := range models {
		for _, opt := range options {
			members := []string{`"model":` + model, `"stream":true`, `"messages":[{"role":"user","content":"x\"}"}]`}
			if opt != "" {
				members = append(members, `"stream_options" : `+opt)
			}
			for _, order := range permutations(len(members)) {
				parts := make([]string, len(members))
				for i, j := range order {
					parts[i] = members[j]
				}
				body := "{" + strings.Join(parts, ",") + "}"
				out = append(out, body, strings.Replace(strings.Replace(body, `"model"`, `"mod\u0065l"`, 1), `"stream_options"`, `"stream\u005foptions"`, 1))
			}
		}
	}
	return out
}

func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for at := 0; at <= len(p); at++ {
			q := append(append(append([]int{}, p[:at]...), n-1), p[at:]...)
			out = append(out, q)
		}
	}
	return out
}

// checkRewrite compares Rewrite with a decode–edit–encode reference: the
// body decoded by encoding/json, edited as a map, must equal the
// decoded result; and every member Rewrite was not asked to change keeps
// its bytes.
func checkRewrite(t *testing.T, body []byte, p Peeked, e Edit) {
	t.Helper()
	out, err := Rewrite(body, p, e)
	ref := decodeObject(t, body)
	if e.IncludeUsage {
		switch so := ref["stream_options"].(type) {
		case nil:
			ref["stream_options"] = map[string]any{"include_usage": true}
		case map[string]any:
			so["include_usage"] = true
		default:
			if err == nil {
				t.Fatalf("Rewrite(%s, %+v) accepted stream_options %v", body, e, so)
			}
			return
		}
	}
	if err != nil {
		t.Fatalf("Rewrite(%s, %+v): %v", body, e, err)
	}
	if e.Model != "" {
		if _, ok := ref["model"]; ok {
			ref["model"] = e.Model
		}
	}
	if !json.Valid(out) {
		t.Fatalf("Rewrite(%s, %+v) = %s: not JSON", body, e, out)
	}
	if got := decodeObject(t, out); !reflect.DeepEqual(got, ref) {
		t.Fatalf("Rewrite(%s, %+v) =\n%s\ndecoded %v\nreference %v", body, e, out, got, ref)
	}
	var before, after map[string]json.RawMessage
	json.Unmarshal(body, &before)
	json.Unmarshal(out, &after)
	for k, v := range before {
		if (k == "model" && e.Model != "") || (k == "stream_options" && e.IncludeUsage) {
			continue
		}
		if string(after[k]) != string(v) {
			t.Fatalf("Rewrite(%s, %+v) changed %s: %s -> %s", body, e, k, v, after[k])
		}
	}
}

func decodeObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v map[string]any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func TestCaseCollisionsAreRefused(t *testing.T) {
	for _, body := range []string{
		`{"model":"a","MODEL":"o1","messages":[]}`,
		`{"Model":"o1","messages":[]}`,
		`{"model":"a","stream":false,"Stream":true,"messages":[]}`,
		`{"model":"a","ſtream":true,"messages":[]}`,
		`{"model":"a","mod\u0045l":"o1","messages":[]}`,
		`{"model":"a","stream":true,"STREAM_OPTIONS":{"include_usage":false},"messages":[]}`,
	} {
		_, err := Peek([]byte(body))
		var e *Error
		if !errors.As(err, &e) || e.Code != "invalid_value" || e.Param == "" {
			t.Errorf("Peek(%s) = %v, want invalid_value", body, err)
		}
	}
	for _, body := range []string{`{"model":"a","models":1,"Messages":[],"streaming":true,"messages":[]}`, `{"mode":1,"model":"a","messages":[]}`} {
		if _, err := Peek([]byte(body)); err != nil {
			t.Errorf("Peek(%s): %v", body, err)
		}
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
			if refErr == nil && ref != nil && utf8.Valid(b) && !caseCollides(ref) {
				t.Fatalf("Peek(%q) refuses an object encoding/json reads: %v", b, err)
			}
			return
		}
		if refErr != nil || ref == nil {
			t.Fatalf("Peek(%q) accepts what encoding/json does not read as an object (%v)", b, refErr)
		}
		checkPeeked(t, b, p, ref)

		if p.ModelIsStr {
			checkRewrite(t, b, p, Edit{Model: "a\"b\\c\u00e9\u2028\x01</script>", IncludeUsage: p.Stream})
		}
		if p.Stream {
			checkRewrite(t, b, p, Edit{IncludeUsage: true})
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

// caseCollides reports whether an object has a key that names model,
// stream or stream_options in other letter case (Peek refuses those).
func caseCollides(obj map[string]json.RawMessage) bool {
	for k := range obj {
		for _, name := range caseGuarded {
			if k != name && strings.EqualFold(k, name) {
				return true
			}
		}
	}
	return false
}
