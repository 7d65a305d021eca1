package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config controls the shape of mock responses.
type Config struct {
	Latency  time.Duration // before non-stream body / first stream chunk
	Chunks   int           // content chunks per stream
	ChunkGap time.Duration // delay between content chunks
	// Echo puts the last message's text content at the start of the
	// answer (a stream sends it as one extra content chunk), so that a
	// test can tell concurrent answers apart. It costs a JSON parse.
	Echo bool
	// SlowChunks and SlowChunkGap shape the streams of requests for the
	// model SlowModel instead (long-lived streams, for memory tests).
	SlowChunks   int
	SlowChunkGap time.Duration
	// Hold makes chat answers wait until Hold chat requests have arrived
	// (0: no barrier), before Latency. With HoldRelease they then also
	// wait for POST /mock/release. GET /mock/hold reports the count
	// (?wait=1: once all have arrived). Held requests get a 503 if the
	// barrier is not passed within HoldTimeout of the first arrival (0:
	// no limit).
	Hold        int
	HoldRelease bool
	HoldTimeout time.Duration
}

// SlowModel is the model name whose streams follow Config.SlowChunks and
// Config.SlowChunkGap.
const SlowModel = "mock-slow"

// Handler serves the mock OpenAI API with precomputed bodies.
type Handler struct {
	cfg  Config
	gate *gate // nil without Config.Hold

	completion    []byte // non-stream chat.completion JSON
	completionLen string
	models        []byte
	modelsLen     string
	roleChunk     []byte // first SSE event (role)
	contentChunk  []byte // one content SSE event, reused Chunks times
	finishChunk   []byte // finish_reason SSE event
	usageChunk    []byte // usage SSE event
	done          []byte // data: [DONE]
}

const (
	mockID      = "chatcmpl-loommock"
	mockModel   = "mock-model"
	mockCreated = 1700000000
	// Token counts reported in usage.
	promptTokens = 10
)

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

var (
	hdrJSON        = []string{"application/json"}
	hdrSSE         = []string{"text/event-stream"}
	hdrNoCache     = []string{"no-cache"}
	hdrKeepAlive   = []string{"keep-alive"}
	streamTrue     = []byte(`"stream":true`)
	streamTrueSp   = []byte(`"stream": true`)
	includeUsage   = []byte(`"include_usage":true`)
	includeUsageSp = []byte(`"include_usage": true`)
	slowModel      = []byte(`"model":"` + SlowModel + `"`)
)

// NewHandler precomputes every response body for cfg.
func NewHandler(cfg Config) *Handler {
	h := &Handler{cfg: cfg}
	if cfg.Hold > 0 {
		h.gate = newGate(cfg.Hold, cfg.HoldRelease, cfg.HoldTimeout)
	}
	completionTokens := cfg.Chunks
	if completionTokens == 0 {
		completionTokens = 1
	}
	total := promptTokens + completionTokens
	usage := `{"prompt_tokens":` + strconv.Itoa(promptTokens) +
		`,"completion_tokens":` + strconv.Itoa(completionTokens) +
		`,"total_tokens":` + strconv.Itoa(total) + `}`
	head := `{"id":"` + mockID + `","object":"chat.completion.chunk","created":` +
		strconv.Itoa(mockCreated) + `,"model":"` + mockModel + `",`

	h.completion = []byte(`{"id":"` + mockID + `","object":"chat.completion","created":` +
		strconv.Itoa(mockCreated) + `,"model":"` + mockModel +
		`","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("tok ", completionTokens) +
		`"},"finish_reason":"stop"}],"usage":` + usage + "}\n")
	h.completionLen = strconv.Itoa(len(h.completion))
	h.models = []byte(`{"object":"list","data":[{"id":"` + mockModel +
		`","object":"model","created":` + strconv.Itoa(mockCreated) + `,"owned_by":"loom-mock"}]}` + "\n")
	h.modelsLen = strconv.Itoa(len(h.models))
	h.roleChunk = []byte("data: " + head +
		`"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n")
	h.contentChunk = []byte("data: " + head +
		`"choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}` + "\n\n")
	h.finishChunk = []byte("data: " + head +
		`"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n")
	h.usageChunk = []byte("data: " + head + `"choices":[],"usage":` + usage + "}\n\n")
	h.done = []byte("data: [DONE]\n\n")
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/v1/chat/completions" || p == "/chat/completions" ||
		(strings.HasPrefix(p, "/openai/deployments/") && strings.HasSuffix(p, "/chat/completions")):
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, `{"error":{"message":"method not allowed"}}`, http.StatusMethodNotAllowed)
			return
		}
		h.chat(w, r)
	case strings.HasPrefix(p, "/mock/") && h.gate != nil:
		h.gate.serveControl(w, r)
	case p == "/v1/models" || p == "/models":
		hd := w.Header()
		hd["Content-Type"] = hdrJSON
		hd["Content-Length"] = []string{h.modelsLen}
		_, _ = w.Write(h.models)
	default:
		w.Header()["Content-Type"] = hdrJSON
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`+"\n")
	}
}

func (h *Handler) chat(w http.ResponseWriter, r *http.Request) {
	bp := bodyPool.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() {
		if cap(buf) <= 1<<20 { // don't retain huge buffers
			*bp = buf[:0]
			bodyPool.Put(bp)
		}
	}()
	var err error
	buf, err = readAll(r.Body, buf)
	if err != nil {
		http.Error(w, `{"error":{"message":"bad body"}}`, http.StatusBadRequest)
		return
	}
	if h.gate != nil {
		if err := h.gate.wait(r.Context()); err != nil {
			if r.Context().Err() == nil {
				b, _ := json.Marshal(map[string]any{"error": map[string]string{"message": "loom-mock: " + err.Error(), "type": "server_error"}})
				w.Header()["Content-Type"] = hdrJSON
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write(append(b, '\n'))
			}
			return
		}
	}
	stream := bytes.Contains(buf, streamTrue) || bytes.Contains(buf, streamTrueSp)
	var echo []byte // the echoed text as a JSON string, quotes included
	if h.cfg.Echo {
		echo = lastContent(buf)
	}
	if !stream {
		if !sleep(r, h.cfg.Latency) {
			return
		}
		body, n := h.completion, h.completionLen
		if echo != nil {
			// The precomputed content is a run of "tok ": prefix it.
			body = bytes.Replace(body, []byte(`"content":"`), append(append([]byte(`"content":"`), echo[1:len(echo)-1]...), ' '), 1)
			n = strconv.Itoa(len(body))
		}
		hd := w.Header()
		hd["Content-Type"] = hdrJSON
		hd["Content-Length"] = []string{n}
		_, _ = w.Write(body)
		return
	}
	usage := bytes.Contains(buf, includeUsage) || bytes.Contains(buf, includeUsageSp)
	chunks, gap := h.cfg.Chunks, h.cfg.ChunkGap
	if bytes.Contains(buf, slowModel) {
		chunks, gap = h.cfg.SlowChunks, h.cfg.SlowChunkGap
	}
	h.stream(w, r, usage, echo, chunks, gap)
}

// lastContent returns the text content of the request's last message as a
// JSON string, or a JSON empty string when there is none.
func lastContent(body []byte) []byte {
	var req struct {
		Messages []struct {
			Content any `json:"content"`
		} `json:"messages"`
	}
	text := ""
	if json.Unmarshal(body, &req) == nil && len(req.Messages) > 0 {
		text, _ = req.Messages[len(req.Messages)-1].Content.(string)
	}
	b, _ := json.Marshal(text)
	return b
}

func (h *Handler) stream(w http.ResponseWriter, r *http.Request, usage bool, echo []byte, chunks int, gap time.Duration) {
	fl, _ := w.(http.Flusher)
	flush := func() {
		if fl != nil {
			fl.Flush()
		}
	}
	hd := w.Header()
	hd["Content-Type"] = hdrSSE
	hd["Cache-Control"] = hdrNoCache
	hd["Connection"] = hdrKeepAlive
	if !sleep(r, h.cfg.Latency) {
		return
	}
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(h.roleChunk); err != nil {
		return
	}
	flush()
	if echo != nil {
		chunk := bytes.Replace(h.contentChunk, []byte(`"content":"tok "`), append([]byte(`"content":`), echo...), 1)
		if _, err := w.Write(chunk); err != nil {
			return
		}
		flush()
	}
	for i := 0; i < chunks; i++ {
		if i > 0 && !sleep(r, gap) {
			return
		}
		if _, err := w.Write(h.contentChunk); err != nil {
			return
		}
		flush()
	}
	_, _ = w.Write(h.finishChunk)
	flush()
	if usage {
		_, _ = w.Write(h.usageChunk)
		flush()
	}
	_, _ = w.Write(h.done)
	flush()
}

// sleep waits d or until the request is cancelled; it reports whether
// the caller should continue.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// readAll appends r to buf, capping at 64 MiB.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	const limit = 64 << 20
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= limit {
				return buf, io.ErrShortBuffer
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
