package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/internal/testbin"
	"github.com/loom-runtime/loom/core/store/backend"
)

// keyItem is where the dashboard keeps the key (sessionStorage) and where
// versions before kept it (localStorage).
const keyItem = "loom.dashboard.key"

// TestDashboardHardening drives the real gateway and Chromium through two
// findings of the dashboard:
//
//   - the admin token is never in localStorage: one left there by an older
//     version is deleted, not used; signing in keeps the key in
//     sessionStorage (a reload stays signed in, log-out clears it);
//   - a trace whose stored body fails authentication (tampered behind
//     Loom's back) is labelled "failed authentication — possibly
//     tampered", never "shredded", which stays the label of a tenant
//     deleted with --shred.
func TestDashboardHardening(t *testing.T) {
	chromium := findChromium(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "loom.hcl"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"LOOM_MASTER_KEY=" + masterKey, "LOOM_TRACE_BATCH_INTERVAL=10ms", "LOOM_ADMIN_TOKEN=" + adminToken}
	keys := map[string]string{}
	for _, tenant := range []string{"acme", "beta"} {
		testbin.MustRun(t, dir, env, "tenant", "create", tenant)
		keys[tenant] = testbin.LastLine(testbin.MustRun(t, dir, env, "key", "create", "--tenant", tenant))
	}

	// Traffic: two acme traces (one to tamper with, one intact), one of beta.
	srv := serve(t, dir, env)
	g := &gateway{url: srv.URL, key: keys["acme"]}
	sent := map[string]string{} // name → request id
	for _, s := range []struct{ name, tenant string }{{"tampered", "acme"}, {"intact", "acme"}, {"shredded", "beta"}} {
		g.key = keys[s.tenant]
		code, rid, body := g.chat(t, chatBody("echo-1", false, false, user("hardening probe "+s.name)))
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", s.name, code, body)
		}
		sent[s.name] = rid
	}
	ids := map[string]string{} // name → trace id
	deadline := time.Now().Add(30 * time.Second)
	for len(ids) < len(sent) {
		if time.Now().After(deadline) {
			t.Fatalf("traces of %v not listed after 30s (found %v)", sent, ids)
		}
		for _, tr := range adminTraces(t, srv.URL) {
			for name, rid := range sent {
				if tr.RequestID == rid {
					ids[name] = tr.ID
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv.Stop(t, syscall.SIGTERM)

	// Behind Loom's back: one body altered in the store. Then beta is
	// deleted with its keys shredded, as an operator does.
	st, err := backend.Open(context.Background(), "sqlite", filepath.Join(dir, "loom.db"), 1, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	err = st.(interface {
		TamperTrace(ctx context.Context, id, column string, value any) error
	}).TamperTrace(context.Background(), ids["tampered"], "request_ct", []byte("forged ciphertext without a valid tag"))
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	testbin.MustRun(t, dir, env, "tenant", "delete", "beta", "--shred")
	srv = serve(t, dir, env)
	g.url = srv.URL

	b := newBrowser(t, chromium)
	base := g.dashboardURL(t)

	// An admin token left in localStorage by an older version is deleted
	// when the page loads, and does not sign anyone in.
	b.do("open the dashboard", chromedp.Navigate(base), chromedp.WaitVisible(testid("login-key")))
	b.do("plant an old version's token", chromedp.Evaluate[chromedp.Void](
		fmt.Sprintf(`localStorage.setItem(%q, %q)`, keyItem, adminToken)))
	b.do("reload", chromedp.Reload(), chromedp.WaitReady(testid("login-key")))
	b.waitJS("the page's start", `document.getElementById('login').hidden !== document.getElementById('app').hidden`)
	if v := eval[bool](b, fmt.Sprintf(`localStorage.getItem(%q) === null`, keyItem)); !v {
		t.Error("the token left in localStorage by an older version is still there")
	}
	if eval[bool](b, `!document.getElementById('app').hidden`) {
		t.Error("a token left in localStorage signed the dashboard in")
		b.do("log out", chromedp.Click(testid("logout")))
	}

	// Signing in with the admin token: sessionStorage only.
	b.do("sign in with the admin token", chromedp.WaitVisible(testid("login-key")),
		chromedp.SendKeys(testid("login-key"), adminToken), chromedp.Click(testid("login-submit")),
		chromedp.WaitVisible(css(`[data-testid="cards"][data-state="ready"]`)))
	checkStorage := func(when, session string) {
		t.Helper()
		got := eval[map[string]any](b, fmt.Sprintf(`({local: localStorage.getItem(%q), session: sessionStorage.getItem(%q)})`, keyItem, keyItem))
		if got["local"] != nil {
			t.Errorf("%s: localStorage holds the key", when)
		}
		if s, _ := got["session"].(string); s != session {
			t.Errorf("%s: sessionStorage holds %q, want %q", when, s, session)
		}
	}
	checkStorage("signed in", adminToken)
	b.do("reload, signed in", chromedp.Reload(), chromedp.WaitVisible(css(`[data-testid="cards"][data-state="ready"]`)))
	checkStorage("after a reload", adminToken)

	// The trace views.
	openTrace := func(name string) {
		t.Helper()
		b.do("open the "+name+" trace", chromedp.Evaluate[chromedp.Void](`location.hash = `+jsonString("#/traces/"+ids[name])))
		b.waitJS("the "+name+" trace", fmt.Sprintf(`(() => { const v = document.querySelector('[data-testid="trace-view"]');
			return !v.hidden && v.dataset.id === %q && v.dataset.state === 'ready' })()`, ids[name]))
	}
	banner := func() (reason, text string) {
		got := eval[[]string](b, `(() => { const e = document.querySelector('[data-testid="trace-unreadable"]');
			return e ? [e.dataset.reason || '', e.textContent] : ['', ''] })()`)
		return got[0], got[1]
	}

	openTrace("tampered")
	b.milestone("tampered")
	reason, text := banner()
	if reason != "failed_authentication" || !strings.Contains(text, "Failed authentication — possibly tampered") || strings.Contains(text, "shredded") {
		t.Errorf("tampered trace: banner %q %q, want failed_authentication, \"Failed authentication — possibly tampered\", no \"shredded\"", reason, text)
	}
	if eval[string](b, `document.querySelector('[data-testid="trace-unreadable"]')?.getAttribute('role') ?? ''`) != "alert" {
		t.Error("the tampering banner is not an alert")
	}

	openTrace("shredded")
	b.milestone("shredded")
	if reason, text := banner(); reason != "shredded" || !strings.Contains(text, "shredded") || strings.Contains(text, "tampered") {
		t.Errorf("shredded trace: banner %q %q, want shredded", reason, text)
	}

	openTrace("intact")
	if reason, text := banner(); reason != "" || text != "" {
		t.Errorf("intact trace: banner %q %q", reason, text)
	}
	if conv := eval[string](b, `document.querySelector('[data-testid="conversation"]').textContent`); !strings.Contains(conv, "hardening probe intact") {
		t.Errorf("intact trace: conversation %q", conv)
	}

	// Log out: nothing left in either storage.
	b.do("back to the list", chromedp.Evaluate[chromedp.Void](`location.hash = '#/'`), chromedp.WaitVisible(testid("trace-rows")))
	b.do("log out", chromedp.Click(testid("logout")), chromedp.WaitVisible(testid("login-key")))
	checkStorage("logged out", "")

	b.mu.Lock()
	for _, m := range b.console {
		if m.IsException() || strings.Contains(m.Text, "Content Security Policy") || strings.Contains(m.Text, "Trusted Type") {
			t.Errorf("browser console: %s %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1)
		}
	}
	b.mu.Unlock()
}

// serve starts `loom serve` in dir and waits until it is healthy.
func serve(t *testing.T, dir string, env []string) *testbin.Server {
	t.Helper()
	srv := testbin.Serve(t, dir, env)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("loom serve stderr:\n%s", srv.Stderr.String())
		}
	})
	srv.WaitHealthy(t, 30*time.Second)
	return srv
}

// adminTraces is the first page of every tenant's traces, as the admin sees it.
func adminTraces(t *testing.T, url string) []summary {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/api/v1/traces?limit=200", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var page struct {
		Data []summary `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &page) != nil {
		t.Fatalf("GET /api/v1/traces as the admin: %d %s", resp.StatusCode, body)
	}
	return page.Data
}
