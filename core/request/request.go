// Package request reads what the gateway needs from a client's JSON body —
// model, stream, stream_options — without decoding the rest, and makes the
// few byte-level edits Loom applies before forwarding it.
package request

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
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
		if err := checkCase(key); err != nil {
			return p, err
		}
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

// caseGuarded are the members Loom routes, prices and relays by. Loom
// reads them by their exact names, as OpenAI does; an upstream built on Go's
// encoding/json (Ollama, LocalAI) matches keys regardless of letter case and
// takes the last, so {"model":"a","MODEL":"o1"} would be routed and priced
// as "a" and served as "o1".
var caseGuarded = [...]string{"model", "stream", "stream_options"}

// checkCase refuses a raw key that names a caseGuarded member in other
// letter case (with Unicode's simple folding, as encoding/json applies it:
// "ſtream" is "stream" to it).
func checkCase(raw []byte) error {
	k := raw[1 : len(raw)-1]
	if len(k) < len("model") {
		return nil
	}
	if bytes.IndexByte(k, '\\') >= 0 {
		var dec string
		if json.Unmarshal(raw, &dec) != nil {
			return nil
		}
		k = []byte(dec)
	}
	for _, name := range caseGuarded {
		if string(k) != name && strings.EqualFold(string(k), name) {
			return &Error{Param: name, Code: "invalid_value", Message: fmt.Sprintf(
				"Invalid key %s: it differs from '%s' only in letter case, and upstreams disagree on which of the two they read. Send '%s' exactly.",
				raw, name, name)}
		}
	}
	return nil
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
	case len(p.Model) > MaxModelBytes:
		return &Error{Param: "model", Code: "invalid_value", Message: fmt.Sprintf("Invalid 'model': longer than %d bytes.", MaxModelBytes)}
	case strings.ContainsFunc(p.Model, unicode.IsControl):
		return &Error{Param: "model", Code: "invalid_value", Message: "Invalid 'model': it contains control characters."}
	}
	return nil
}

// MaxModelBytes bounds a model name. The longest real ones (Bedrock
// inference-profile ARNs, fine-tune ids) stay well under it; a longer name
// is refused before it reaches routing, metrics labels or a trace.
const MaxModelBytes = 256

// Edit is what Loom changes in a body before forwarding it. Rewrite
// applies every change of one Edit in a single pass over the body as Peek
// read it, so no change can move the bytes another one points at.
type Edit struct {
	// Model, when not empty, replaces the top-level model.
	Model string
	// IncludeUsage sets stream_options.include_usage to true, so the
	// upstream reports usage at the end of a stream.
	IncludeUsage bool
}

// splice replaces the bytes of span (empty for an insertion) with with.
type splice struct {
	span Span
	with []byte
}

// Rewrite returns body with e applied; p is Peek's result for body. Every
// byte outside the edited values is kept as it was. A body that needs no
// change is returned as is.
func Rewrite(body []byte, p Peeked, e Edit) ([]byte, error) {
	var buf [4]splice
	edits := buf[:0]
	if e.Model != "" && p.ModelSpan.valid() {
		edits = append(edits, splice{p.ModelSpan, quote(e.Model)})
	}
	if e.IncludeUsage && !p.IncludeUsage {
		var err error
		if edits, err = includeUsageEdits(edits, body, p); err != nil {
			return nil, err
		}
	}
	if len(edits) == 0 {
		return body, nil
	}
	slices.SortFunc(edits, func(a, b splice) int { return a.span.Start - b.span.Start })
	size := len(body)
	for _, s := range edits {
		size += len(s.with) - (s.span.End - s.span.Start)
	}
	out := make([]byte, 0, size)
	at := 0
	for _, s := range edits {
		out = append(out, body[at:s.span.Start]...)
		out = append(out, s.with...)
		at = s.span.End
	}
	return append(out, body[at:]...), nil
}

// includeUsageEdits appends the splices that turn on
// stream_options.include_usage: a new stream_options member, a null one
// replaced, or, inside an object, every include_usage value set to true
// (or the member added). The object's other options stay byte for byte.
func includeUsageEdits(edits []splice, body []byte, p Peeked) ([]splice, error) {
	const member = `"include_usage":true`
	so := p.StreamOptionsSpan
	if !so.valid() {
		return append(edits, insertMember(body, bytes.IndexByte(body, '{'), `"stream_options":{`+member+`}`)), nil
	}
	val := body[so.Start:so.End]
	switch val[0] {
	case 'n': // null: the default options
		return append(edits, splice{so, []byte("{" + member + "}")}), nil
	case '{':
	default:
		return nil, &Error{Param: "stream_options", Code: "invalid_type", Message: "Invalid type for 'stream_options': expected an object."}
	}
	s := scanner{b: val, i: 1}
	found := false
	for {
		key, v, ok := s.member()
		if !ok {
			break
		}
		if keyIs(key, "include_usage") {
			found = true
			edits = append(edits, splice{Span{so.Start + v.Start, so.Start + v.End}, []byte("true")})
		}
	}
	if !found {
		edits = append(edits, insertMember(body, so.Start, member))
	}
	return edits, nil
}

// insertMember is the splice that adds member first in the object whose
// opening brace is at open, with a comma when other members follow.
func insertMember(body []byte, open int, member string) splice {
	s := scanner{b: body, i: open + 1}
	s.ws()
	at := Span{open + 1, open + 1}
	if body[s.i] == '}' {
		return splice{at, []byte(member)}
	}
	return splice{at, []byte(member + ",")}
}

// quote encodes s as a JSON string.
func quote(s string) []byte {
	enc := strconv.AppendQuote(nil, s)
	if !json.Valid(enc) { // strconv quoting differs from JSON for some runes; fall back
		enc, _ = json.Marshal(s)
	}
	return enc
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
