package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/auth"
)

// defaultMaxBody is server.max_body_bytes by default (README, Configuration).
const defaultMaxBody = 10485760

// badRow is one request of TestBadInput and what it must get.
type badRow struct {
	name         string
	method, path string // default POST /v1/chat/completions
	body         string
	header       []string // name, value pairs; default Content-Type: application/json
	key          string   // "" and !anon: the acme key
	anon         bool     // no key at all
	tenant       string   // whose trace it is; default acme
	// send, when set, sends the request itself (raw connections).
	send func(t *testing.T, p *proxyEnv, r badRow) (*http.Response, []byte)

	status    int
	typ, code string // the error's; empty for a served request
	trace     string // the trace's status; empty: no trace (unauthenticated)
	// upstream: the body the upstream must receive, byte for byte ("" for
	// no check); contains: raw JSON the upstream's body must contain.
	upstream string
	contains []string
	// extraTraces counts requests send made besides the row's own.
	extraTraces int
}

func chatJSON(extra string) string {
	return `{"model":"gpt-ok","messages":[{"role":"user","content":"hi"}]` + extra + `}`
}

// TestBadInput sends one request per row through the real gateway: every
// malformed, mistyped, oversized, odd or slow request gets its exact
// status and an OpenAI error (or is served), the gateway and its plugins
// live on, and each authenticated request has exactly one trace.
func TestBadInput(t *testing.T) {
	p := startProxy(t, "LOOM_SERVER_READ_HEADER_TIMEOUT=500ms", "LOOM_SERVER_BODY_TIMEOUT=1500ms")
	plugins := childPids(t, p.gw.cmd.Process.Pid, "loom-provider-")
	slices.Sort(plugins)
	if len(plugins) != 5 {
		t.Fatalf("%d plugin processes, want 5", len(plugins))
	}

	checksum := []byte(p.key)
	checksum[20] ^= 1 // still base62, wrong checksum
	unknown, _ := auth.NewKey()
	manyMessages := `{"model":"gpt-ok","messages":[` + strings.Repeat(`{"role":"user","content":"hi"},`, 9999) + `{"role":"user","content":"last"}]}`
	unknownFields := "{\n  \"model\" : \"gpt-ok\",\"x_vendor\":{\"a\":[1,2.50,{\"b\":null}],\"c\":\"\\u00e9\\n\"}, \"temperature\":0.70,\n" +
		`"messages":[{"role":"user","content":"hi","x_nested":{"deep":[true,false,1e400]},"name":"n"}],"metadata":{"k":"v"},"x_top":-0.0}`
	exact := chatJSON(`,"pad":"` + strings.Repeat("a", defaultMaxBody-len(chatJSON(`,"pad":""`))) + `"`)
	tooBig := exact[:len(exact)-1] + ` }`
	if len(exact) != defaultMaxBody || len(tooBig) != defaultMaxBody+1 {
		t.Fatalf("bodies of %d and %d bytes around a limit of %d", len(exact), len(tooBig), defaultMaxBody)
	}

	rows := []badRow{
		// Malformed JSON.
		{name: "truncated", body: `{"model":`, status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		{name: "trailing comma", body: `{"model":"gpt-ok","messages":[],}`, status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		{name: "single quotes", body: `{'model':'gpt-ok','messages':[]}`, status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		{name: "two objects", body: chatJSON("") + `{}`, status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		{name: "unterminated string", body: `{"model":"gpt-ok","messages":[{"role":"user","content":"hi}]}`, status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		{name: "array body", body: `[` + chatJSON("") + `]`, status: 400, typ: "invalid_request_error", code: "invalid_type", trace: "rejected"},
		{name: "string body", body: `"hello"`, status: 400, typ: "invalid_request_error", code: "invalid_type", trace: "rejected"},
		{name: "empty body", body: ``, status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		{name: "blank body", body: " \r\n\t", status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		// Wrong types, missing fields.
		{name: "model 42", body: `{"model":42,"messages":[]}`, status: 400, typ: "invalid_request_error", code: "invalid_type", trace: "rejected"},
		{name: "model repeated, the last one 42", body: `{"model":"gpt-ok","messages":[],"model":42}`, status: 400, typ: "invalid_request_error", code: "invalid_type", trace: "rejected"},
		{name: "model null", body: `{"model":null,"messages":[]}`, status: 400, typ: "invalid_request_error", code: "invalid_type", trace: "rejected"},
		{name: `messages "x"`, body: `{"model":"gpt-ok","messages":"x"}`, status: 400, typ: "invalid_request_error", code: "invalid_type", trace: "rejected"},
		{name: `stream "yes"`, body: chatJSON(`,"stream":"yes"`), status: 400, typ: "invalid_request_error", code: "invalid_type", trace: "rejected"},
		{name: "stream_options without stream", body: chatJSON(`,"stream_options":{"include_usage":true}`), status: 400, typ: "invalid_request_error", code: "invalid_value", trace: "rejected"},
		{name: "missing model", body: `{"messages":[{"role":"user","content":"hi"}]}`, status: 400, typ: "invalid_request_error", code: "missing_required_parameter", trace: "rejected"},
		{name: "empty model", body: `{"model":"","messages":[]}`, status: 400, typ: "invalid_request_error", code: "missing_required_parameter", trace: "rejected"},
		{name: "missing messages", body: `{"model":"gpt-ok"}`, status: 400, typ: "invalid_request_error", code: "missing_required_parameter", trace: "rejected"},
		{name: "embeddings without input", path: "/v1/embeddings", body: `{"model":"text-embedding-3-small"}`, status: 400, typ: "invalid_request_error", code: "missing_required_parameter", trace: "rejected"},
		// Sizes.
		{name: "body of exactly the limit", body: exact, status: 200, trace: "ok", upstream: exact},
		{name: "body one byte over the limit", body: tooBig, status: 413, typ: "invalid_request_error", code: "request_too_large", trace: "rejected"},
		{name: "chunked body over the limit", body: tooBig, send: sendChunked, status: 413, typ: "invalid_request_error", code: "request_too_large", trace: "rejected"},
		{name: "10,000 messages", body: manyMessages, status: 200, trace: "ok", upstream: manyMessages},
		// Encodings.
		{name: "invalid UTF-8 in content", body: chatJSON("")[:len(chatJSON(""))-5] + "\xff\xfe\"}]}", status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		{name: "raw NUL in content", body: strings.Replace(chatJSON(""), `"hi"`, "\"h\x00i\"", 1), status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		{name: "raw NUL between tokens", body: "{\x00" + chatJSON("")[1:], status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		{name: "escaped NUL and lone surrogate", body: strings.Replace(chatJSON(""), `"hi"`, `"h\u0000i \ud800 \u00e9"`, 1), status: 200, trace: "ok",
			upstream: strings.Replace(chatJSON(""), `"hi"`, `"h\u0000i \ud800 \u00e9"`, 1)},
		// Unknown fields go through untouched.
		{name: "unknown fields", body: unknownFields, status: 200, trace: "ok", upstream: unknownFields},
		{name: "unknown fields, stream", body: strings.Replace(unknownFields, `"temperature"`, `"stream":true,"temperature"`, 1), status: 200, trace: "ok",
			upstream: `{"stream_options":{"include_usage":true},` + strings.Replace(unknownFields, `"temperature"`, `"stream":true,"temperature"`, 1)[1:],
			contains: []string{`"x_vendor":{"a":[1,2.50,{"b":null}],"c":"\u00e9\n"}`, `"x_nested":{"deep":[true,false,1e400]}`, `"x_top":-0.0}`}},
		{name: "unknown fields, echo", body: strings.Replace(unknownFields, `"gpt-ok"`, `"echo/echo-1"`, 1), status: 200, trace: "ok"},
		// Content types.
		{name: "text/plain", body: chatJSON(""), header: []string{"Content-Type", "text/plain"}, status: 200, trace: "ok", upstream: chatJSON("")},
		{name: "no content type", body: chatJSON(""), header: []string{}, status: 200, trace: "ok", upstream: chatJSON("")},
		{name: "form-encoded", body: "model=gpt-ok&messages=hi", header: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 400, typ: "invalid_request_error", code: "invalid_json", trace: "rejected"},
		// Methods and paths.
		{name: "GET on chat completions", method: "GET", status: 405, typ: "invalid_request_error", code: "method_not_allowed", trace: "rejected"},
		{name: "PUT on embeddings", method: "PUT", path: "/v1/embeddings", body: `{}`, status: 405, typ: "invalid_request_error", code: "method_not_allowed", trace: "rejected"},
		{name: "unknown /v1 path", path: "/v1/assistants", body: `{}`, status: 404, typ: "invalid_request_error", code: "unknown_url", trace: "rejected"},
		{name: "bare /v1/", path: "/v1/", body: `{}`, status: 404, typ: "invalid_request_error", code: "unknown_url", trace: "rejected"},
		{name: "no route for the tenant", key: p.narrow, tenant: "narrow", body: strings.Replace(chatJSON(""), "gpt-ok", "claude-3", 1), status: 404, typ: "invalid_request_error", code: "model_not_found", trace: "rejected"},
		// Keys.
		{name: "no key", anon: true, body: chatJSON(""), status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		{name: "no key, malformed JSON", anon: true, body: `{"model":`, status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		{name: "no key, unknown path", anon: true, path: "/v1/assistants", status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		{name: "malformed key", anon: true, header: []string{"Authorization", "Bearer loom_abc"}, body: chatJSON(""), status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		{name: "wrong checksum", anon: true, header: []string{"Authorization", "Bearer " + string(checksum)}, body: chatJSON(""), status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		{name: "unknown key", anon: true, header: []string{"X-Api-Key", unknown}, body: chatJSON(""), status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		{name: "empty bearer", anon: true, header: []string{"Authorization", "Bearer "}, body: chatJSON(""), status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		{name: "basic scheme", anon: true, header: []string{"Authorization", "Basic " + p.key}, body: chatJSON(""), status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		// Slow clients.
		{name: "body trickled past the header timeout", body: chatJSON(""), send: sendTrickled, status: 200, trace: "ok", upstream: chatJSON("")},
		{name: "body stalled past server.body_timeout", body: chatJSON(""), send: sendStalledPastTimeout, status: 408, typ: "invalid_request_error", code: "body_timeout", trace: "rejected"},
		{name: "Content-Length beyond the body, then a stall", body: chatJSON(""), send: sendStalled, extraTraces: 1, status: 499, typ: "invalid_request_error", code: "client_closed_request", trace: "client_disconnect"},
	}

	type sent struct {
		row badRow
		id  string
	}
	var done []sent
	for _, r := range rows {
		if r.method == "" {
			r.method = "POST"
		}
		if r.path == "" {
			r.path = "/v1/chat/completions"
		}
		if r.key == "" && !r.anon {
			r.key = p.key
		}
		if r.tenant == "" {
			r.tenant = "acme"
		}
		t.Run(r.name, func(t *testing.T) {
			send := r.send
			if send == nil {
				send = sendPlain
			}
			resp, body := send(t, p, r)
			id := resp.Header.Get("X-Request-Id")
			done = append(done, sent{r, id})
			if resp.StatusCode != r.status {
				t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, r.status, body)
			}
			if r.code != "" {
				var e struct {
					Error *struct {
						Message string  `json:"message"`
						Type    string  `json:"type"`
						Code    *string `json:"code"`
					} `json:"error"`
				}
				if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Code == nil {
					t.Fatalf("not an OpenAI error: %.300s", body)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("content type %q", ct)
				}
				if e.Error.Type != r.typ || *e.Error.Code != r.code {
					t.Fatalf("type %q code %q, want %q %q: %s", e.Error.Type, *e.Error.Code, r.typ, r.code, e.Error.Message)
				}
			} else if !bytes.Contains(body, []byte(`"Hello from the mock"`)) && !bytes.Contains(body, []byte(`data: [DONE]`)) && !bytes.Contains(body, []byte(`"content":"hi"`)) {
				t.Fatalf("not an answer: %.300s", body)
			}
			if r.upstream != "" || r.contains != nil {
				up, found := p.up.Find(id)
				if !found {
					t.Fatal("the upstream did not get the request")
				}
				if r.upstream != "" && string(up.RawBody) != r.upstream {
					t.Errorf("the upstream got %d bytes, not the %d expected: %.200s", len(up.RawBody), len(r.upstream), up.RawBody)
				}
				for _, c := range r.contains {
					if !bytes.Contains(up.RawBody, []byte(c)) {
						t.Errorf("the upstream's body lacks %s", c)
					}
				}
			}
			// Never a crash: the gateway answers, its plugins are the same processes.
			if code, _ := get(t, p.gw.url+"/healthz"); code != 200 {
				t.Fatalf("/healthz %d after the request", code)
			}
			now := childPids(t, p.gw.cmd.Process.Pid, "loom-provider-")
			slices.Sort(now)
			if !slices.Equal(now, plugins) {
				t.Fatalf("plugin processes %v, were %v", now, plugins)
			}
		})
	}

	// Exactly one trace per authenticated request, with its status; none
	// for the others.
	st := openStore(t, p)
	want := map[string]int{}
	for _, d := range done {
		if d.row.trace != "" {
			want[d.row.tenant]++
		}
		want["acme"] += d.row.extraTraces
	}
	for tenant, n := range want {
		waitTraces(t, st, tenant, int64(n))
	}
	time.Sleep(200 * time.Millisecond) // anything extra would show up now
	byID := map[string][]openedTrace{}
	for _, tenant := range []string{"acme", "narrow"} {
		all := openTraces(t, st, tenant)
		n := 0
		for id, trs := range all {
			byID[id] = append(byID[id], trs...)
			n += len(trs)
		}
		if n != want[tenant] {
			t.Errorf("tenant %s has %d traces, want %d", tenant, n, want[tenant])
		}
	}
	for _, d := range done {
		trs := byID[d.id]
		switch {
		case d.row.trace == "" && len(trs) != 0:
			t.Errorf("%s: unauthenticated, yet traced: %+v", d.row.name, trs[0].Trace)
		case d.row.trace == "":
		case len(trs) != 1:
			t.Errorf("%s: %d traces", d.row.name, len(trs))
		case trs[0].Status != d.row.trace || trs[0].HTTPStatus != d.row.status:
			t.Errorf("%s: trace %s %d, want %s %d (%s)", d.row.name, trs[0].Status, trs[0].HTTPStatus, d.row.trace, d.row.status, trs[0].ErrorMessage)
		}
	}
}

// header sets r's headers on req: its key, and its header pairs (or the
// JSON content type when it has none).
func (r badRow) headers(h http.Header) {
	if r.key != "" {
		h.Set("Authorization", "Bearer "+r.key)
	}
	if r.header == nil {
		h.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(r.header); i += 2 {
		h.Set(r.header[i], r.header[i+1])
	}
}

func doBad(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func sendPlain(t *testing.T, p *proxyEnv, r badRow) (*http.Response, []byte) {
	var body io.Reader
	if r.method != "GET" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, p.gw.url+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	r.headers(req.Header)
	return doBad(t, req)
}

// sendChunked sends the body without a Content-Length.
func sendChunked(t *testing.T, p *proxyEnv, r badRow) (*http.Response, []byte) {
	req, _ := http.NewRequest(r.method, p.gw.url+r.path, io.MultiReader(strings.NewReader(r.body)))
	req.ContentLength = -1
	r.headers(req.Header)
	return doBad(t, req)
}

// rawRequest opens a connection and writes r's request line and headers,
// announcing length bytes of body.
func rawRequest(t *testing.T, p *proxyEnv, r badRow, length int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.gw.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h := http.Header{}
	r.headers(h)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: loom\r\nContent-Length: %d\r\n", r.method, r.path, length)
	h.Write(&b)
	b.WriteString("\r\n")
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	return conn
}

func readResponse(t *testing.T, conn net.Conn) (*http.Response, []byte) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// sendTrickled sends the body a few bytes at a time over 1.2s, longer than
// the gateway's read header timeout (500ms): only headers are timed.
func sendTrickled(t *testing.T, p *proxyEnv, r badRow) (*http.Response, []byte) {
	conn := rawRequest(t, p, r, len(r.body))
	start := time.Now()
	const pieces = 12
	for i := 0; i < pieces; i++ {
		time.Sleep(100 * time.Millisecond)
		from, to := i*len(r.body)/pieces, (i+1)*len(r.body)/pieces
		if _, err := conn.Write([]byte(r.body[from:to])); err != nil {
			t.Fatalf("the gateway stopped reading after %v: %v", time.Since(start), err)
		}
	}
	return readResponse(t, conn)
}

// sendStalledPastTimeout sends half its body and stalls: after
// server.body_timeout (1.5s here) without a byte, the gateway answers 408
// on its own, at the earliest 1.5s and well before the 30s default (the
// bound leaves a busy machine seconds of slack).
func sendStalledPastTimeout(t *testing.T, p *proxyEnv, r badRow) (*http.Response, []byte) {
	conn := rawRequest(t, p, r, len(r.body))
	if _, err := conn.Write([]byte(r.body[:len(r.body)/2])); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, body := readResponse(t, conn)
	if waited := time.Since(start); waited < 1400*time.Millisecond || waited > 15*time.Second {
		t.Errorf("the gateway answered a stalled body after %v, want about 1.5s", waited)
	}
	return resp, body
}

// sendStalled announces more body than it sends and stalls for 1s (less
// than server.body_timeout: the gateway waits), while the gateway keeps
// serving others; then it closes its side of the
// connection, and the gateway answers that the client closed the request.
func sendStalled(t *testing.T, p *proxyEnv, r badRow) (*http.Response, []byte) {
	conn := rawRequest(t, p, r, len(r.body)+100)
	if _, err := conn.Write([]byte(r.body)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := conn.Read(make([]byte, 1)); n != 0 || !isTimeout(err) {
		t.Fatalf("the gateway answered a request whose body is still coming: %d bytes, %v", n, err)
	}
	if resp, body := p.post(t, "/v1/chat/completions", p.key, chatJSON("")); resp.StatusCode != 200 {
		t.Fatalf("another request during the stall: %d %s", resp.StatusCode, body)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, conn)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
