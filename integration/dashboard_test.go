package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/spawnerhq/spawner/client"
	"github.com/spawnerhq/spawner/messages"
)

// chromiumPath finds a Chromium or Chrome binary, or returns "".
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// The dashboard in a real browser: it lists the live sessions, starts one
// when the button is clicked, learns of others through the event stream,
// and ends one when its End button is clicked.
func TestDashboardInABrowser(t *testing.T) {
	bin := chromiumPath()
	if bin == "" {
		t.Skip("no chromium binary found (install it with: apt-get install -y chromium); skipping the browser test")
	}
	h := start(t, testConfig(t))
	api, err := client.New(h.BaseURL)
	if err != nil {
		t.Fatal(err)
	}
	before, err := api.Init(t.Context(), messages.SpawnRequest{Key: "before-load"})
	if err != nil {
		t.Fatal(err)
	}

	ctx, problems := openBrowser(t, bin)
	row := func(id string) chromedp.CSS { return chromedp.CSS(`#rows tr[data-id="` + id + `"]`) }
	if err := chromedp.Do(ctx,
		chromedp.Navigate(h.BaseURL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="live"]`)),
		chromedp.WaitVisible(row(before.SessionID)),
	); err != nil {
		t.Fatalf("the dashboard did not show the live session %s: %v", before.SessionID, err)
	}

	// Start a session by clicking.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#new-key"), "from-the-browser"),
		chromedp.Click(chromedp.CSS("#new-btn")),
	); err != nil {
		t.Fatal(err)
	}
	clicked, err := chromedp.Run(ctx, chromedp.Poll[string](`(() => {
		const r = [...document.querySelectorAll('#rows tr[data-status="ready"]')].find(r => r.textContent.includes('from-the-browser'));
		return r ? r.dataset.id : null;
	})()`, chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		t.Fatalf("the session started by the button never showed as ready: %v", err)
	}
	s, err := api.Get(t.Context(), clicked)
	if err != nil || s.Key != "from-the-browser" || s.Status != messages.StatusReady {
		t.Fatalf("the API shows the clicked session as %+v, %v", s, err)
	}

	// A session started elsewhere arrives through the event stream: its
	// ready event is listed, and its row appears.
	other, err := api.Init(t.Context(), messages.SpawnRequest{Key: "from-the-api"})
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#rows tr[data-id="`+other.SessionID+`"][data-status="ready"]`))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`[...document.querySelectorAll('#events li')].some(li =>
		li.textContent.includes('ready') && li.querySelector('.sid').title === '`+other.SessionID+`')`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the events list never showed ready for %s: %v", other.SessionID, err)
	}
	live, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#stat-live")))
	if err != nil || strings.TrimSpace(live) != "3" {
		t.Errorf("live sessions shows %q (%v), want 3", live, err)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#chart path.line').length`)); err != nil || n != 1 {
		t.Errorf("the chart has %d lines (%v), want 1", n, err)
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("artifacts", 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("artifacts", "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)

	// End the clicked session with its button.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#rows tr[data-id="`+clicked+`"] button.end`)),
		chromedp.WaitNotPresent(row(clicked)),
	); err != nil {
		t.Fatalf("the ended session's row did not go: %v", err)
	}
	if _, err := api.Get(t.Context(), clicked); !client.IsNotFound(err) {
		t.Errorf("after End, the API still has %s: %v", clicked, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`[...document.querySelectorAll('#events li')].some(li =>
		li.textContent.includes('terminated') && li.textContent.includes('deleted'))`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Errorf("the events list never showed the session terminated: %v", err)
	}

	for _, p := range problems() {
		t.Errorf("browser console: %s", p)
	}
}

// openBrowser starts a headless Chromium for the test and collects what
// its pages log as errors: script exceptions, CSP violations, failed loads.
func openBrowser(t *testing.T, bin string) (context.Context, func() []string) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1000), chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	ctx, cancel := context.WithTimeout(browser, 2*time.Minute)
	t.Cleanup(func() { cancel(); cancelBrowser(); cancelAlloc() })

	var mu sync.Mutex
	var problems []string
	// Console starts the browser; it must do so before any action does.
	logs := chromedp.Console(ctx)
	go func() {
		for m, err := range logs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, m.String())
				mu.Unlock()
			}
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(problems)
	}
}

// With API tokens on, the dashboard asks for one, keeps it, and works.
func TestDashboardWithAnAPIToken(t *testing.T) {
	bin := chromiumPath()
	if bin == "" {
		t.Skip("no chromium binary found (install it with: apt-get install -y chromium); skipping the browser test")
	}
	cfg := testConfig(t)
	cfg.Gateway.AuthConfig.APITokens = []string{"ops-secret"}
	h := start(t, cfg)
	api, _ := client.New(h.BaseURL, client.WithToken("ops-secret"))
	rep, err := api.Init(t.Context(), messages.SpawnRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, problems := openBrowser(t, bin)
	row := chromedp.CSS(`#rows tr[data-id="` + rep.SessionID + `"]`)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(h.BaseURL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="unauthorized"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#banner`)),
	); err != nil {
		t.Fatalf("the dashboard did not ask for a token: %v", err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#token-btn")),
		chromedp.SendKeys(chromedp.CSS("#token-input"), "ops-secret"),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="live"]`)),
		chromedp.WaitVisible(row),
		chromedp.WaitNotVisible(chromedp.CSS(`#banner`)),
	); err != nil {
		t.Fatalf("with the token set, the dashboard did not list the session: %v", err)
	}
	// The token survives a reload.
	if err := chromedp.Do(ctx,
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="live"]`)),
		chromedp.WaitVisible(row),
	); err != nil {
		t.Fatalf("after a reload: %v", err)
	}
	for _, p := range problems() {
		// The refused calls before the token was set are expected.
		if !strings.Contains(p, "401") {
			t.Errorf("browser console: %s", p)
		}
	}
}
