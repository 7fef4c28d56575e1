package gateway

import (
	"io"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

func TestDashboardIsServedWithItsAssets(t *testing.T) {
	e := newGWEnv(t, nil)
	resp, err := http.Get(e.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP %q does not keep the page to its own origin", csp)
	}
	for _, id := range []string{`id="rows"`, `id="new-form"`, `id="chart"`, `id="token-btn"`} {
		if !strings.Contains(string(page), id) {
			t.Errorf("the page lacks %s", id)
		}
	}
	// Every asset the page names must be served, with its type.
	refs := regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`).FindAllStringSubmatch(string(page), -1)
	if len(refs) < 3 {
		t.Fatalf("the page names %d assets, want its script, style and icon", len(refs))
	}
	want := map[string]string{".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
	for _, ref := range refs {
		resp, err := http.Get(e.srv.URL + ref[1])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		ext := ref[1][strings.LastIndexByte(ref[1], '.'):]
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), want[ext]) {
			t.Errorf("GET %s: %d %q", ref[1], resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}

func TestDashboardHidesWhatIsNotAnAsset(t *testing.T) {
	e := newGWEnv(t, nil)
	for _, path := range []string{"/assets/", "/assets/index.html", "/assets/nope.js", "/assets/../gateway.go", "/index.html", "/dashboard"} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "<a href") {
			t.Errorf("GET %s: %d %.80q, want 404 and no listing", path, resp.StatusCode, body)
		}
	}
}

// The dashboard must work offline and behind a strict CSP: nothing it
// ships may load from another origin.
func TestDashboardLoadsNothingFromElsewhere(t *testing.T) {
	remote := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := fs.WalkDir(webFS, "web", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, _ := webFS.ReadFile(path)
		for _, m := range remote.FindAllString(string(data), -1) {
			if m != "http://www.w3.org" { // the SVG namespace, a name and not a load
				t.Errorf("%s refers to %s", path, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
