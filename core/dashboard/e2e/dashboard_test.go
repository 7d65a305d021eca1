package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The number of chat completions the test sends, and which are malformed.
const (
	requests = 120
	pageSize = 50 // the UI's page size: the table must grow beyond it
)

func bad(i int) bool { return i%20 == 7 } // 6 malformed bodies

// prompts of special requests.
const (
	xssIndex  = 11
	xssPrompt = `<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> xss-probe & </pre>`
	toolIndex = 13
)

// browser is a Chromium tab, with what the page logged.
type browser struct {
	t       *testing.T
	ctx     context.Context
	mu      sync.Mutex
	console []chromedp.ConsoleMessage
	shots   bool // LOOM_E2E_SCREENSHOTS=1: save a screenshot at each milestone
}

// findChromium returns the browser's path, or skips (fails with CI=true).
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (CI=true): apt-get install chromium")
	}
	t.Skip("chromium is not installed; to run the browser end-to-end test: apt-get install chromium")
	return ""
}

func newBrowser(t *testing.T, execPath string) *browser {
	t.Helper()
	profile, err := os.MkdirTemp("", "loom-e2e-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(profile) })
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no deadline
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{t: t, ctx: ctx, shots: os.Getenv("LOOM_E2E_SCREENSHOTS") == "1"}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	// Registered after the browser: runs before it is closed.
	t.Cleanup(func() {
		if t.Failed() {
			b.screenshot("failure")
			b.logConsole()
		}
	})
	return b
}

// screenshot saves a full-page PNG under testdata/artifacts and logs its path.
func (b *browser) screenshot(name string) {
	dir, _ := filepath.Abs(filepath.Join("testdata", "artifacts"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Logf("screenshot: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	// From the top, so the sticky header is where it belongs in the image.
	_ = chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.png", strings.ReplaceAll(b.t.Name(), "/", "_"), name, time.Now().Format("150405")))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Logf("screenshot: %v", err)
		return
	}
	b.t.Logf("screenshot: %s", path)
}

func (b *browser) milestone(name string) {
	if b.shots {
		b.screenshot(name)
	}
}

func (b *browser) logConsole() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		b.t.Logf("browser console: %s %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1)
	}
}

// do runs actions with a deadline; on error it fails the test with what.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JavaScript predicate until it is true.
func (b *browser) waitJS(what, predicate string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.t.Fatalf("waiting for %s (%s): %v", what, predicate, err)
	}
}

func css(s string) chromedp.CSS { return chromedp.CSS(s) }

func testid(id string) chromedp.CSS { return chromedp.CSS(fmt.Sprintf("[data-testid=%q]", id)) }

// rowCount is the JavaScript for the number of rows in the trace table.
const rowCount = `document.querySelectorAll('[data-testid="trace-rows"] tr').length`

// loadAllRows scrolls the table's sentinel into view until the list ends.
func (b *browser) loadAllRows() int {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b.waitJS("a page of traces", `document.querySelector('[data-testid="trace-table"]').dataset.state !== 'loading'`)
		if eval[string](b, `document.querySelector('[data-testid="trace-table"]').dataset.state`) == "end" {
			return eval[int](b, rowCount)
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("the trace list did not end after 30s of scrolling (%d rows)", eval[int](b, rowCount))
		}
		b.do("scroll to the end of the table", chromedp.ScrollIntoView(testid("trace-sentinel")))
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDashboard(t *testing.T) {
	chromium := findChromium(t)
	start := time.Now()
	g := startGateway(t)
	t.Logf("gateway up in %v", time.Since(start).Round(time.Millisecond))

	// Traffic: plain and streamed completions, a few malformed bodies, one
	// prompt that is HTML, one conversation with a tool call.
	type sent struct {
		prompt string
		stream bool
		bad    bool
	}
	byRequest := map[string]sent{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range jobs {
				s := sent{prompt: fmt.Sprintf("e2e prompt %03d: what comes after %d?", i, i*7), stream: i%3 == 0, bad: bad(i)}
				messages := []map[string]any{user(s.prompt)}
				switch i {
				case xssIndex:
					s.prompt = xssPrompt
					messages = []map[string]any{user(s.prompt)}
				case toolIndex:
					messages = []map[string]any{
						{"role": "system", "content": "You are a weather bot."},
						user("weather in Paris?"),
						{"role": "assistant", "content": nil, "tool_calls": []map[string]any{{
							"id": "call_e2e", "type": "function",
							"function": map[string]any{"name": "lookup_weather", "arguments": `{"city":"Paris"}`}}}},
						{"role": "tool", "tool_call_id": "call_e2e", "content": `{"celsius":21}`},
						user(s.prompt),
					}
				}
				body := chatBody("echo-1", s.stream, i%2 == 0, messages...)
				if s.bad {
					body = body[:len(body)/2] // cut: not JSON
				}
				code, rid, resp := g.chat(t, body)
				switch {
				case s.bad && code < 400:
					t.Errorf("malformed request %d answered %d", i, code)
				case !s.bad && code != 200:
					t.Errorf("request %d: %d %s", i, code, resp)
				case s.stream && !s.bad && !strings.Contains(string(resp), "data: [DONE]"):
					t.Errorf("stream %d did not finish: %s", i, resp)
				}
				mu.Lock()
				byRequest[rid] = s
				mu.Unlock()
			}
		})
	}
	for i := range requests {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	all := g.waitTraces(t, requests)
	want := computeTotals(all)
	nBad := 0
	for i := range requests {
		if bad(i) {
			nBad++
		}
	}
	if want.errors != int64(nBad) {
		t.Errorf("the API lists %d failed traces, want %d (the malformed requests)", want.errors, nBad)
	}
	if want.tokens == 0 {
		t.Error("the API lists no tokens")
	}
	t.Logf("traffic sent and stored in %v: %+v", time.Since(start).Round(time.Millisecond), want)

	b := newBrowser(t, chromium)
	base := g.dashboardURL(t)

	// Sign in: a wrong key is refused (the 401 clears it), then the right one.
	b.do("open the dashboard", chromedp.Navigate(base), chromedp.WaitVisible(testid("login-key")))
	b.milestone("login")
	b.do("sign in with a wrong key",
		chromedp.SendKeys(testid("login-key"), "loom_thisKeyDoesNotExist0000000000000000"),
		chromedp.Click(testid("login-submit")))
	b.waitJS("the refusal", `document.querySelector('[data-testid="login-message"]').textContent.includes('refused')`)
	if v := eval[bool](b, `localStorage.getItem('loom.dashboard.key') === null && sessionStorage.getItem('loom.dashboard.key') === null`); !v {
		t.Error("a refused key stayed in storage")
	}
	b.do("sign in", chromedp.SendKeys(testid("login-key"), g.key), chromedp.Click(testid("login-submit")),
		chromedp.WaitVisible(css(`[data-testid="cards"][data-state="ready"]`)))

	// The cards equal what the listing adds up to.
	checkCards := func(window string, want totals) {
		t.Helper()
		b.waitJS("the cards of "+window, fmt.Sprintf(`(() => { const c = document.querySelector('[data-testid="cards"]'); return c.dataset.state === 'ready' && c.dataset.window === %q })()`, window))
		cards := eval[map[string]string](b, `Object.fromEntries(
			[...document.querySelectorAll('[data-testid^="card-"]')].map((c) => [c.dataset.testid, c.dataset.value])
			.concat([['errors', document.querySelector('[data-testid="card-error-rate"]').dataset.errors],
			         ['chart-total', document.querySelector('[data-testid="chart-requests"]').dataset.total],
			         ['requests-text', document.querySelector('[data-testid="card-requests"] .value').textContent]]))`)
		t.Logf("cards (%s): %v", window, cards)
		wantInt := map[string]int64{"card-requests": want.requests, "card-tokens": want.tokens, "card-cost": want.cost,
			"errors": want.errors, "chart-total": want.requests}
		for k, w := range wantInt {
			if got := cards[k]; got != strconv.FormatInt(w, 10) {
				t.Errorf("%s: data-value %q, want %d", k, got, w)
			}
		}
		rate, err := strconv.ParseFloat(cards["card-error-rate"], 64)
		if wantRate := float64(want.errors) / float64(want.requests); err != nil || math.Abs(rate-wantRate) > 0.00005+1e-9 ||
			len(cards["card-error-rate"]) != len("0.0000") {
			t.Errorf("card-error-rate: data-value %q, want %.4f", cards["card-error-rate"], wantRate)
		}
		inRange := func(k string, lo, hi float64) {
			v, err := strconv.ParseFloat(cards[k], 64)
			if err != nil || v < lo-0.001 || v > hi+0.001 || !strings.Contains(cards[k], ".") || len(cards[k])-strings.Index(cards[k], ".") != 4 {
				t.Errorf("%s: data-value %q, want a number with 3 decimals in [%.3f, %.3f]", k, cards[k], lo, hi)
			}
		}
		inRange("card-p95-latency", want.minLatency, want.maxLatency)
		inRange("card-p95-overhead", want.minOverhead, want.maxOverhead)
		if cards["requests-text"] != strconv.FormatInt(want.requests, 10) { // < 1,000: no separator
			t.Errorf("card-requests shows %q", cards["requests-text"])
		}
	}
	checkCards(eval[string](b, `document.querySelector('[data-testid="cards"]').dataset.window`), want)
	b.do("choose the 1h window", chromedp.Click(testid("window-1h")))
	checkCards("1h", want) // all the traffic is minutes old

	// The table: newest first, one page, more as it scrolls, all in the end.
	b.waitJS("the first page", `document.querySelector('[data-testid="trace-table"]').dataset.state === 'idle'`)
	first := eval[int](b, rowCount)
	if first < pageSize || first >= requests {
		t.Errorf("the first page shows %d rows, want %d to %d", first, pageSize, requests-1)
	}
	if id := eval[string](b, `document.querySelector('[data-testid="trace-rows"] tr').dataset.id`); id != all[0].ID {
		t.Errorf("the first row is %s, want the newest trace %s", id, all[0].ID)
	}
	b.milestone("dashboard")
	if n := b.loadAllRows(); n != requests {
		t.Errorf("after scrolling the table has %d rows, want %d", n, requests)
	}

	// A filter restarts the list.
	streamed := 0
	for _, tr := range all {
		if tr.Stream {
			streamed++
		}
	}
	// The change event restarts the list at once (state "loading").
	b.do("filter streamed traces", chromedp.Evaluate[chromedp.Void](`(() => {
		const s = document.querySelector('[data-testid="filter-stream"]');
		s.value = 'true';
		s.dispatchEvent(new Event('change', {bubbles: true}));
	})()`))
	if n := b.loadAllRows(); n != streamed {
		t.Errorf("stream filter: %d rows, want %d", n, streamed)
	}
	if !eval[bool](b, `[...document.querySelectorAll('[data-testid="trace-rows"] tr')].every((r) => r.dataset.stream === 'true')`) {
		t.Error("stream filter: a row that is not streamed")
	}
	b.do("clear the filters", chromedp.Click(testid("filter-reset")))
	b.waitJS("the unfiltered list", `document.querySelector('[data-testid="trace-table"]').dataset.state === 'idle' &&
		document.querySelector('[data-testid="trace-rows"] tr').dataset.id === `+jsonString(all[0].ID))

	// Open traces: by clicking a row (non-stream), by URL (stream).
	find := func(pred func(summary, sent) bool) (summary, sent) {
		t.Helper()
		for _, tr := range all[:pageSize] {
			if s, ok := byRequest[tr.RequestID]; ok && tr.Status == "ok" && pred(tr, s) {
				return tr, s
			}
		}
		t.Fatal("no trace on the first page fits")
		return summary{}, sent{}
	}
	openTrace := func(id string) {
		t.Helper()
		b.waitJS("trace "+id, fmt.Sprintf(`(() => { const v = document.querySelector('[data-testid="trace-view"]');
			return !v.hidden && v.dataset.id === %q && v.dataset.state === 'ready' })()`, id))
	}
	checkConversation := func(prompt string) {
		t.Helper()
		conv := eval[string](b, `document.querySelector('[data-testid="conversation"]').textContent`)
		answer := eval[string](b, `[...document.querySelectorAll('[data-testid="answer"]')].map((a) => a.textContent).join('\n')`)
		if !strings.Contains(conv, prompt) {
			t.Errorf("the conversation lacks the prompt %q:\n%s", prompt, conv)
		}
		if !strings.Contains(answer, prompt) { // echo repeats the prompt
			t.Errorf("the answer lacks the echoed prompt %q:\n%s", prompt, answer)
		}
		for _, id := range []string{"raw-request", "raw-response", "waterfall"} {
			if !eval[bool](b, fmt.Sprintf(`document.querySelector('[data-testid=%q]') !== null`, id)) {
				t.Errorf("the trace view has no %s", id)
			}
		}
	}
	plain, plainSent := find(func(tr summary, s sent) bool { return !tr.Stream && !strings.ContainsAny(s.prompt, "<&") })
	b.do("open a trace", chromedp.Click(css(fmt.Sprintf(`[data-testid="trace-rows"] tr[data-id=%q] td:nth-child(3)`, plain.ID))))
	openTrace(plain.ID)
	checkConversation(plainSent.prompt)
	// The echo model has no price: the cost says so and names the model.
	if cost := eval[string](b, `document.querySelector('[data-testid="trace-cost"]').textContent`); !strings.Contains(cost, "not priced: price catalog") || !strings.Contains(cost, "echo-1") {
		t.Errorf("the cost of an unpriced trace shows %q", cost)
	}
	b.milestone("trace")
	b.do("go back", chromedp.Click(testid("trace-back")), chromedp.WaitVisible(testid("trace-rows")))
	if n := eval[int](b, rowCount); n < pageSize {
		t.Errorf("back from a trace: %d rows", n)
	}

	stream, streamSent := find(func(tr summary, s sent) bool { return tr.Stream })
	b.do("open a streamed trace", chromedp.Evaluate[chromedp.Void](`location.hash = `+jsonString("#/traces/"+stream.ID)))
	openTrace(stream.ID)
	checkConversation(streamSent.prompt)

	// Attacker-controlled text stays text.
	for _, tr := range all {
		if byRequest[tr.RequestID].prompt != xssPrompt {
			continue
		}
		b.do("open the HTML prompt", chromedp.Evaluate[chromedp.Void](`location.hash = `+jsonString("#/traces/"+tr.ID)))
		openTrace(tr.ID)
		checkConversation(xssPrompt)
		if n := eval[int](b, `document.querySelectorAll('#trace-view img, #trace-view script').length`); n != 0 {
			t.Errorf("the prompt's HTML became %d elements", n)
		}
		if eval[bool](b, `window.__xss !== undefined`) {
			t.Error("the prompt's script ran")
		}
	}
	for _, tr := range all {
		if !strings.HasPrefix(byRequest[tr.RequestID].prompt, fmt.Sprintf("e2e prompt %03d:", toolIndex)) {
			continue
		}
		b.do("open the tool call", chromedp.Evaluate[chromedp.Void](`location.hash = `+jsonString("#/traces/"+tr.ID)))
		openTrace(tr.ID)
		calls := eval[string](b, `[...document.querySelectorAll('[data-testid="tool-call"]')].map((c) => c.textContent).join('\n')`)
		if !strings.Contains(calls, "lookup_weather") || !strings.Contains(calls, `"city": "Paris"`) {
			t.Errorf("tool calls shown: %q", calls)
		}
	}
	b.do("back to the list", chromedp.Evaluate[chromedp.Void](`location.hash = '#/'`), chromedp.WaitVisible(testid("trace-rows")))

	// Live tail: a new request appears at the top without a reload.
	b.do("turn the live tail on", chromedp.Click(testid("live-switch")))
	b.waitJS("the live tail", `document.querySelector('[data-testid="live-status"]').dataset.state === 'on'`)
	const livePrompt = "e2e live tail probe"
	code, rid, resp := g.chat(t, chatBody("echo-1", false, false, user(livePrompt)))
	if code != 200 {
		t.Fatalf("live probe: %d %s", code, resp)
	}
	b.waitJS("the live trace on top", `document.querySelector('[data-testid="trace-rows"] tr').dataset.requestId === `+jsonString(rid))
	b.milestone("live")
	g.waitTraces(t, requests+1)
	b.do("refresh the cards", chromedp.Click(testid("refresh")))
	b.waitJS("the refreshed cards", fmt.Sprintf(`document.querySelector('[data-testid="card-requests"]').dataset.value === '%d'`, requests+1))

	// Log out: the key is gone, also after a reload.
	b.do("log out", chromedp.Click(testid("logout")), chromedp.WaitVisible(testid("login-key")))
	b.do("reload", chromedp.Reload(), chromedp.WaitVisible(testid("login-key")))
	if !eval[bool](b, `localStorage.getItem('loom.dashboard.key') === null && sessionStorage.getItem('loom.dashboard.key') === null &&
		document.getElementById('app').hidden`) {
		t.Error("logged out, but the key or the dashboard is still there")
	}

	// Nothing on the page may have thrown or hit the CSP.
	b.mu.Lock()
	for _, m := range b.console {
		text := m.Text
		if m.IsException() || strings.Contains(text, "Content Security Policy") || strings.Contains(text, "Trusted Type") {
			t.Errorf("browser console: %s %s (%s:%d)", m.Type, text, m.URL, m.Line+1)
		}
	}
	b.mu.Unlock()
	t.Logf("done in %v", time.Since(start).Round(time.Millisecond))
}
