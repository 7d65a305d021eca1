package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// holdAnswer is one chat request's outcome.
type holdAnswer struct {
	status int
	body   string
	err    error
}

// holdSend posts a chat request (a stream when stream) in the background.
func holdSend(srv *httptest.Server, content string, stream bool) chan holdAnswer {
	out := make(chan holdAnswer, 1)
	go func() {
		body := fmt.Sprintf(`{"model":"m","stream":%v,"messages":[{"role":"user","content":%q}]}`, stream, content)
		resp, err := srv.Client().Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			out <- holdAnswer{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- holdAnswer{resp.StatusCode, string(b), err}
	}()
	return out
}

// holdState reads GET /mock/hold, with ?arrived=k when k > 0.
func holdState(t *testing.T, srv *httptest.Server, k int) (int, gateState) {
	t.Helper()
	url := srv.URL + "/mock/hold"
	if k > 0 {
		url += fmt.Sprintf("?arrived=%d", k)
	}
	resp, err := srv.Client().Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s gateState
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, s
}

func answered(t *testing.T, name string, c chan holdAnswer) {
	t.Helper()
	select {
	case a := <-c:
		t.Fatalf("%s answered before the barrier: %d %v %.200s", name, a.status, a.err, a.body)
	default:
	}
}

func wantOK(t *testing.T, name string, c chan holdAnswer, marker string) {
	t.Helper()
	a := <-c
	if a.err != nil || a.status != 200 || !strings.Contains(a.body, marker) {
		t.Fatalf("%s: %d %v %.300s", name, a.status, a.err, a.body)
	}
}

// -hold 3: the first two requests (a stream and a plain one) wait for the
// third; then all three are answered, and later ones at once.
func TestHoldBarrier(t *testing.T) {
	srv := httptest.NewServer(NewHandler(Config{Chunks: 2, Echo: true, Hold: 3}))
	defer srv.Close()
	a := holdSend(srv, "first", true)
	b := holdSend(srv, "second", false)
	if code, s := holdState(t, srv, 2); code != 200 || s.Arrived != 2 || s.Full || s.Open {
		t.Fatalf("after two arrivals: %d %+v", code, s)
	}
	answered(t, "request 1", a)
	answered(t, "request 2", b)
	c := holdSend(srv, "third", false)
	wantOK(t, "request 1", a, "first")
	wantOK(t, "request 2", b, "second")
	wantOK(t, "request 3", c, "third")
	if code, s := holdState(t, srv, 3); code != 200 || s.Arrived != 3 || !s.Full || !s.Open || s.Broken {
		t.Fatalf("after the barrier: %d %+v", code, s)
	}
	wantOK(t, "request 4", holdSend(srv, "fourth", true), "fourth")
	// The models endpoint is never held.
	resp, err := srv.Client().Get(srv.URL + "/v1/models")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("models: %v %v", resp, err)
	}
	resp.Body.Close()
}

// -hold 2 -hold-release: a full barrier still waits for POST /mock/release.
func TestHoldRelease(t *testing.T) {
	srv := httptest.NewServer(NewHandler(Config{Chunks: 1, Echo: true, Hold: 2, HoldRelease: true}))
	defer srv.Close()
	a := holdSend(srv, "one", true)
	b := holdSend(srv, "two", false)
	if code, s := holdState(t, srv, 2); code != 200 || !s.Full || s.Released || s.Open {
		t.Fatalf("full, not released: %d %+v", code, s)
	}
	answered(t, "request 1", a)
	answered(t, "request 2", b)
	resp, err := srv.Client().Post(srv.URL+"/mock/release", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("release: %v %v", resp, err)
	}
	resp.Body.Close()
	wantOK(t, "request 1", a, "one")
	wantOK(t, "request 2", b, "two")
}

// A barrier not passed within -hold-timeout breaks: the held request gets
// a 503 saying how many arrived, and so does a wait for the rest.
func TestHoldTimeout(t *testing.T) {
	srv := httptest.NewServer(NewHandler(Config{Chunks: 1, Hold: 2, HoldTimeout: 50 * time.Millisecond}))
	defer srv.Close()
	a := <-holdSend(srv, "alone", false)
	if a.err != nil || a.status != 503 || !strings.Contains(a.body, "1 of 2 requests arrived") {
		t.Fatalf("held request after the timeout: %d %v %s", a.status, a.err, a.body)
	}
	if code, s := holdState(t, srv, 2); code != 503 || !s.Broken || s.Open {
		t.Fatalf("waiting on a broken barrier: %d %+v", code, s)
	}
	if b := <-holdSend(srv, "late", false); b.status != 503 {
		t.Fatalf("request after the barrier broke: %d %s", b.status, b.body)
	}
}
