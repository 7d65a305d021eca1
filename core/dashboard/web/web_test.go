package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/gorilla/mux"
)

func serve(t *testing.T, h http.Handler, method, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandler(t *testing.T) {
	h := Handler()
	tests := []struct {
		path, contentType string
		status            int
		body              string
	}{
		{"/dashboard/", "text/html; charset=utf-8", 200, `<script type="module" src="js/app.js">`},
		{"/dashboard/index.html", "text/html; charset=utf-8", 200, "<!doctype html>"},
		{"/dashboard/app.css", "text/css; charset=utf-8", 200, ":root"},
		{"/dashboard/js/app.js", "text/javascript; charset=utf-8", 200, "import"},
		{"/dashboard/favicon.svg", "image/svg+xml", 200, "<svg"},
		{"/app.css", "text/css; charset=utf-8", 200, ":root"}, // prefix already stripped
		{"/dashboard/nope.js", "", 404, ""},
		{"/dashboard/../web.go", "", 404, ""},
		{"/dashboard/js/", "", 404, ""},
	}
	for _, tt := range tests {
		resp := serve(t, h, "GET", tt.path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d, want %d", tt.path, resp.StatusCode, tt.status)
			continue
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") ||
			!strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: CSP %q", tt.path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", tt.path)
		}
		if tt.status != 200 {
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != tt.contentType {
			t.Errorf("%s: content type %q, want %q", tt.path, got, tt.contentType)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("%s: Cache-Control %q", tt.path, got)
		}
		if !strings.Contains(string(body), tt.body) {
			t.Errorf("%s: body lacks %q", tt.path, tt.body)
		}
	}

	resp := serve(t, h, "GET", "/dashboard")
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/dashboard/" {
		t.Errorf("/dashboard: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = serve(t, h, "POST", "/dashboard/")
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	resp = serve(t, h, "HEAD", "/dashboard/app.css")
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || len(b) != 0 || resp.Header.Get("Content-Length") == "0" {
		t.Errorf("HEAD: %d, %d bytes, length %q", resp.StatusCode, len(b), resp.Header.Get("Content-Length"))
	}

	// Revalidation: the ETag gets a 304 with no body.
	etag := serve(t, h, "GET", "/dashboard/").Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	resp = serve(t, h, "GET", "/dashboard/", "If-None-Match", etag)
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusNotModified || len(b) != 0 {
		t.Errorf("If-None-Match: %d with %d bytes", resp.StatusCode, len(b))
	}
	if resp := serve(t, h, "GET", "/dashboard/", "If-None-Match", `"other"`); resp.StatusCode != 200 {
		t.Errorf("stale ETag: %d", resp.StatusCode)
	}
}

// The CSP forbids inline scripts, styles and event handlers: the files must
// not need them. And nothing may turn strings into HTML.
func TestStaticFilesFollowTheCSP(t *testing.T) {
	inlineScript := regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`)
	handlerAttr := regexp.MustCompile(`\son[a-z]+\s*=`)
	htmlSinks := regexp.MustCompile(`\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|\beval\(|new Function\(`)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(static, p)
		s := string(b)
		switch {
		case strings.HasSuffix(p, ".html"):
			if inlineScript.MatchString(s) {
				t.Errorf("%s: inline script", p)
			}
			if handlerAttr.MatchString(s) {
				t.Errorf("%s: inline event handler", p)
			}
			if strings.Contains(s, "style=") || strings.Contains(s, "<style") {
				t.Errorf("%s: inline style", p)
			}
		case strings.HasSuffix(p, ".js"):
			if m := htmlSinks.FindString(s); m != "" {
				t.Errorf("%s: uses %s", p, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Mounted as core/server does it: the handler sees the full path.
func TestMountedOnMux(t *testing.T) {
	r := mux.NewRouter()
	r.Handle("/dashboard", http.RedirectHandler("/dashboard/", http.StatusMovedPermanently))
	r.PathPrefix("/dashboard/").Handler(Handler())
	for path, want := range map[string]int{"/dashboard": 301, "/dashboard/": 200, "/dashboard/js/api.js": 200, "/dashboard/x": 404} {
		if resp := serve(t, r, "GET", path); resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
