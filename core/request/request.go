// Package request reads what the gateway needs from a client's JSON body —
// model, stream, stream_options — without decoding the rest, and makes the
// few byte-level edits Loom applies before forwarding it.
package request

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Span is a byte range [Start, End) of a value in the body.
type Span struct{ Start, End int }

func (s Span) valid() bool { return s.End > s.Start }

// Peeked is what Peek found at the top level of a request body.
type Peeked struct {
	Model      string
	ModelSpan  Span // the whole JSON string value, quotes included
	HasModel   bool // the key is present (whatever its type)
	ModelIsStr bool

	Stream       bool
	StreamSpan   Span
	HasStream    bool
	StreamIsBool bool

	// IncludeUsage is stream_options.include_usage as the client sent it.
	IncludeUsage      bool
	StreamOptionsSpan Span // the stream_options value; zero when absent

	HasMessages    bool
	MessagesIsList bool
	HasInput       bool
}

// Error is a problem with the body, phrased for the client.
type Error struct {
	Param   string // the offending parameter, "" for the body as a whole
	Code    string // invalid_json | invalid_type | missing_required_parameter
	Message string
}

func (e *Error) Error() string { return e.Message }

// Peek scans the top level of body. The body must be a JSON object.
func Peek(body []byte) (Peeked, error) {
	var p Peeked
	if !utf8.Valid(body) {
		return p, &Error{Code: "invalid_json", Message: "The request body is not valid UTF-8, so it is not valid JSON."}
	}
	if !json.Valid(body) {
		return p, &Error{Code: "invalid_json", Message: "We could not parse the JSON body of your request: " + syntaxError(body) +
			" (HINT: make sure the body is valid JSON and Content-Type is application/json.)"}
	}
	s := scanner{b: body}
	s.ws()
	if s.i >= len(body) || body[s.i] != '{' {
		return p, &Error{Code: "invalid_type", Message: "The request body must be a JSON object."}
	}
	s.i++
	for {
		key, span, ok := s.member()
		if !ok {
			break
		}
		val := body[span.Start:span.End]
		switch {
		case keyIs(key, "model"):
			// A repeated key: the last one wins, as in encoding/json.
			p.HasModel, p.ModelSpan, p.Model, p.ModelIsStr = true, span, "", false
			if val[0] == '"' {
				p.ModelIsStr = true
				if bytes.IndexByte(val, '\\') < 0 {
					// No escapes: the bytes between the quotes are the
					// string (the body is valid JSON and valid UTF-8).
					p.Model = string(val[1 : len(val)-1])
				} else {
					// Decode into a local: &p.Model would move all of p to the heap.
					var m string
					err := json.Unmarshal(val, &m)
					p.Model = m
					if err != nil {
						return p, &Error{Param: "model", Code: "invalid_type", Message: "Invalid 'model': " + err.Error()}
					}
				}
			}
		case keyIs(key, "stream"):
			p.HasStream, p.StreamSpan, p.Stream, p.StreamIsBool = true, span, false, false
			switch string(val) {
			case "true":
				p.Stream, p.StreamIsBool = true, true
			case "false":
				p.StreamIsBool = true
			case "null":
				p.StreamIsBool = true // null means the default, false
			}
		case keyIs(key, "stream_options"):
			p.StreamOptionsSpan = span
			p.IncludeUsage = val[0] == '{' && includeUsage(val)
		case keyIs(key, "messages"):
			p.HasMessages, p.MessagesIsList = true, val[0] == '['
		case keyIs(key, "input"):
			p.HasInput = true
		}
	}
	return p, nil
}

// includeUsage reports whether the stream_options object obj (valid JSON)
// has include_usage true. Keys match exactly, as upstreams read them (not
// case-insensitively, as encoding/json's struct decoding would); the last
// of repeated keys wins.
func includeUsage(obj []byte) bool {
	s := scanner{b: obj, i: 1}
	on := false
	for {
		key, val, ok := s.member()
		if !ok {
			return on
		}
		if keyIs(key, "include_usage") {
			on = string(obj[val.Start:val.End]) == "true"
		}
	}
}

// ValidateChat checks what a chat completion needs.
func (p Peeked) ValidateChat() error {
	if err := p.validateModel(); err != nil {
		return err
	}
	if !p.HasMessages {
		return &Error{Param: "messages", Code: "missing_required_parameter", Message: "Missing required parameter: 'messages'."}
	}
	if !p.MessagesIsList {
		return &Error{Param: "messages", Code: "invalid_type", Message: "Invalid type for 'messages': expected an array of messages."}
	}
	if p.HasStream && !p.StreamIsBool {
		return &Error{Param: "stream", Code: "invalid_type", Message: "Invalid type for 'stream': expected a boolean."}
	}
	if p.StreamOptionsSpan.valid() && !p.Stream {
		// OpenAI rejects stream_options without stream; so do we, before it costs an upstream call.
		return &Error{Param: "stream_options", Code: "invalid_value", Message: "The 'stream_options' parameter is only allowed when 'stream' is enabled."}
	}
	return nil
}

// ValidateEmbeddings checks what an embeddings request needs.
func (p Peeked) ValidateEmbeddings() error {
	if err := p.validateModel(); err != nil {
		return err
	}
	if !p.HasInput {
		return &Error{Param: "input", Code: "missing_required_parameter", Message: "Missing required parameter: 'input'."}
	}
	return nil
}

func (p Peeked) validateModel() error {
	switch {
	case !p.HasModel:
		return &Error{Param: "model", Code: "missing_required_parameter", Message: "Missing required parameter: 'model'."}
	case !p.ModelIsStr:
		return &Error{Param: "model", Code: "invalid_type", Message: "Invalid type for 'model': expected a string."}
	case p.Model == "":
		return &Error{Param: "model", Code: "missing_required_parameter", Message: "Missing required parameter: 'model' is empty."}
	}
	return nil
}

// SetModel returns body with the top-level model replaced by model. The
// rest of the body is left byte for byte as it was.
func SetModel(body []byte, p Peeked, model string) []byte {
	if !p.ModelSpan.valid() {
		return body
	}
	enc := strconv.AppendQuote(nil, model)
	if !json.Valid(enc) { // strconv quoting differs from JSON for some runes; fall back
		enc, _ = json.Marshal(model)
	}
	return splice(body, p.ModelSpan, enc)
}

// ForceIncludeUsage returns body with stream_options.include_usage set to
// true, so the upstream reports usage at the end of a stream. A body that
// already asks for it is returned unchanged.
func ForceIncludeUsage(body []byte, p Peeked) ([]byte, error) {
	if p.IncludeUsage {
		return body, nil
	}
	if !p.StreamOptionsSpan.valid() {
		// Insert a new member right after the opening brace.
		open := bytes.IndexByte(body, '{')
		out := make([]byte, 0, len(body)+40)
		out = append(out, body[:open+1]...)
		out = append(out, `"stream_options":{"include_usage":true},`...)
		return append(out, body[open+1:]...), nil
	}
	val := body[p.StreamOptionsSpan.Start:p.StreamOptionsSpan.End]
	if bytes.Equal(val, []byte("null")) {
		return splice(body, p.StreamOptionsSpan, []byte(`{"include_usage":true}`)), nil
	}
	var opts map[string]json.RawMessage
	if err := json.Unmarshal(val, &opts); err != nil {
		return nil, &Error{Param: "stream_options", Code: "invalid_type", Message: "Invalid type for 'stream_options': expected an object."}
	}
	opts["include_usage"] = json.RawMessage("true")
	enc, err := json.Marshal(opts)
	if err != nil {
		return nil, fmt.Errorf("encode stream_options: %w", err)
	}
	return splice(body, p.StreamOptionsSpan, enc), nil
}

func splice(body []byte, s Span, with []byte) []byte {
	out := make([]byte, 0, len(body)-(s.End-s.Start)+len(with))
	out = append(out, body[:s.Start]...)
	out = append(out, with...)
	return append(out, body[s.End:]...)
}

// keyIs compares a raw JSON key (quotes included) with name. Keys with
// escapes are decoded first, so "mod\u0065l" is "model" as JSON says.
func keyIs(raw []byte, name string) bool {
	if len(raw) == len(name)+2 && string(raw[1:len(raw)-1]) == name {
		return true
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return false
	}
	var k string
	return json.Unmarshal(raw, &k) == nil && k == name
}

func syntaxError(body []byte) string {
	var v any
	err := json.Unmarshal(body, &v)
	if err == nil {
		return "invalid JSON"
	}
	return err.Error()
}

// scanner walks JSON already known to be valid.
type scanner struct {
	b []byte
	i int
}

// member reads the next member of the object the scanner is inside, after
// its opening brace: the raw key (quotes included) and the value's span. It
// also consumes a following comma. ok is false at the closing brace.
func (s *scanner) member() (key []byte, val Span, ok bool) {
	s.ws()
	if s.b[s.i] == '}' {
		return nil, Span{}, false
	}
	keyStart := s.i
	s.skipString()
	key = s.b[keyStart:s.i]
	s.ws()
	s.i++ // ':'
	s.ws()
	val.Start = s.i
	s.skipValue()
	val.End = s.i
	s.ws()
	if s.b[s.i] == ',' {
		s.i++
	}
	return key, val, true
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) skipString() {
	s.i++ // opening quote
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			s.i += 2
		case '"':
			s.i++
			return
		default:
			s.i++
		}
	}
}

func (s *scanner) skipValue() {
	switch s.b[s.i] {
	case '"':
		s.skipString()
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				s.skipString()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return
				}
			}
			s.i++
		}
	default: // number, true, false, null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
	}
}
