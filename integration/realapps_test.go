package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/messages"
)

// debianPython is the Python that has Debian's packages (jupyter,
// ipykernel); the first python3 on PATH may be a bare one.
const debianPython = "/usr/bin/python3"

// needJupyter skips unless Debian's Jupyter Notebook and a Python kernel
// are installed, and returns the jupyter command.
func needJupyter(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("jupyter-notebook")
	if err != nil {
		t.Skip("no jupyter-notebook (apt-get install -y jupyter-notebook python3-ipykernel); skipping")
	}
	if err := exec.Command(debianPython, "-c", "import notebook, ipykernel").Run(); err != nil {
		t.Skip("Debian's python3 lacks notebook or ipykernel; skipping")
	}
	return bin
}

// jupyterCommand is the README's Jupyter command, with extra flags.
func jupyterCommand(bin, extra string) string {
	return "exec " + bin + ` --allow-root --no-browser --ip="$HOST" --port="$PORT" --NotebookApp.token='' ` + extra
}

// routingConfig sets one routing mode on both the gateway and the
// provisioner, as SPAWNER_ROUTING does for every component.
func routingConfig(cfg *app.Config, mode, domain string) {
	cfg.Gateway.Routing, cfg.Provisioner.Routing = mode, mode
	cfg.Gateway.SessionDomain, cfg.Provisioner.SessionDomain = domain, domain
}

// freeLoopbackPort returns a port that was free a moment ago, for tests
// whose configuration must name the gateway's port before it starts.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// spawnURL calls /init and returns the session's id and URL.
func spawnURL(t *testing.T, h *harness, body string) (string, string) {
	t.Helper()
	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", body, &rep); code != http.StatusOK && code != http.StatusCreated {
		t.Fatalf("/init: %d %+v", code, rep.Error)
	}
	return rep.SessionID, rep.URL
}

// responses records every HTTP response a page loads, so a test can say
// that each asset answered 200.
type responses struct {
	mu  sync.Mutex
	all []string
	bad []string
	css int
}

func (r *responses) listen(t *testing.T, ctx context.Context) {
	t.Helper()
	err := chromedp.Listen(ctx, func(ev any) {
		e, ok := ev.(*network.EventResponseReceived)
		if !ok {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.all = append(r.all, fmt.Sprintf("%d %s", e.Response.Status, e.Response.URL))
		if e.Response.Status >= 400 {
			r.bad = append(r.bad, fmt.Sprintf("%d %s", e.Response.Status, e.Response.URL))
		}
		if e.Type == network.ResourceTypeStylesheet && e.Response.Status == http.StatusOK {
			r.css++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// driveJupyter does what a user does with Jupyter through Spawner's proxy:
// open the session's URL, see the styled file tree, make a Python 3
// notebook, run print(6*7), and read 42.
func driveJupyter(t *testing.T, url string) {
	t.Helper()
	bin := chromiumPath()
	if bin == "" {
		t.Skip("no chromium binary found (apt-get install -y chromium); skipping the browser test")
	}
	ctx, problems := openBrowser(t, bin)
	var seen responses
	seen.listen(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`#notebook_list`))); err != nil {
		seen.mu.Lock()
		defer seen.mu.Unlock()
		t.Fatalf("the file tree did not render: %v\nresponses: %v\nconsole: %v", err, seen.all, problems())
	}
	font, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.body).fontFamily`))
	if err != nil {
		t.Fatal(err)
	}
	base, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.baseUrl`))
	if err != nil {
		t.Fatal(err)
	}
	seen.mu.Lock()
	bad, css := seen.bad, seen.css
	seen.mu.Unlock()
	if len(bad) > 0 || css == 0 {
		t.Errorf("assets that failed: %v; stylesheets loaded: %d", bad, css)
	}
	if !strings.Contains(font, "Helvetica") {
		t.Errorf("the tree is unstyled: body font %q", font)
	}
	// What the New menu does: ask the contents API for a notebook, with
	// the _xsrf cookie Jupyter set for this session.
	path, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(async () => {
		const m = document.cookie.match(/(?:^|; )_xsrf=([^;]*)/);
		const r = await fetch(document.body.dataset.baseUrl + 'api/contents', {method: 'POST',
			headers: {'Content-Type': 'application/json', 'X-XSRFToken': m ? decodeURIComponent(m[1]) : ''},
			body: JSON.stringify({type: 'notebook'})});
		if (!r.ok) throw new Error('create notebook: ' + r.status + ' ' + await r.text());
		return (await r.json()).path;
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("creating a notebook: %v (console: %v)", err, problems())
	}
	origin := url[:strings.Index(url[len("http://"):], "/")+len("http://")]
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+base+"notebooks/"+path)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`!!(window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel && Jupyter.notebook.kernel.is_connected())`,
		chromedp.WithPollingTimeout(60*time.Second))); err != nil {
		t.Fatalf("the kernel never connected: %v (console: %v)", err, problems())
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`.CodeMirror`)),
		chromedp.SendKeys(chromedp.CSS(`.CodeMirror textarea`), "print(6*7)"),
		chromedp.Click(chromedp.CSS(`button[data-jupyter-action="jupyter-notebook:run-cell-and-select-next"]`)),
		chromedp.WaitVisible(chromedp.CSS(`.output_subarea pre`)),
	); err != nil {
		t.Fatalf("running a cell: %v (console: %v)", err, problems())
	}
	out, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.output_subarea pre`)))
	if err != nil || strings.TrimSpace(out) != "42" {
		t.Errorf("the output cell says %q (%v), want 42", out, err)
	}
}

// Jupyter with its base URL set from SPAWNER_BASE_PATH, under path-keep
// routing: the app sees /p/<id>/... and builds every link under it.
func TestJupyterPathKeep(t *testing.T) {
	bin := needJupyter(t)
	cfg := testConfig(t)
	routingConfig(&cfg, "path-keep", "")
	cfg.Process.Command = jupyterCommand(bin, `--NotebookApp.base_url="$SPAWNER_BASE_PATH"`)
	cfg.Process.StatusSource = "proxy"
	cfg.Provisioner.SpawnTimeout, cfg.Gateway.SpawnTimeout = time.Minute, time.Minute
	h := start(t, cfg)
	id, url := spawnURL(t, h, `{}`)
	if !strings.HasSuffix(url, "/p/"+id+"/") {
		t.Fatalf("session URL %q", url)
	}
	driveJupyter(t, url)
}

// Jupyter with no base URL at all, each session on its own host under
// *.localhost, which browsers resolve to loopback.
func TestJupyterSubdomain(t *testing.T) {
	bin := needJupyter(t)
	port := strconv.Itoa(freeLoopbackPort(t))
	cfg := testConfig(t)
	cfg.Gateway.HTTPAddr = "127.0.0.1:" + port
	cfg.Gateway.PublicURL = "http://localhost:" + port
	routingConfig(&cfg, "subdomain", "sessions.localhost:"+port)
	// Jupyter answers only hosts it knows as local unless told otherwise.
	cfg.Process.Command = jupyterCommand(bin, "--NotebookApp.allow_remote_access=True")
	cfg.Process.StatusSource = "proxy"
	cfg.Provisioner.SpawnTimeout, cfg.Gateway.SpawnTimeout = time.Minute, time.Minute
	h := start(t, cfg)
	id, url := spawnURL(t, h, `{}`)
	if url != "http://"+id+".sessions.localhost:"+port+"/" {
		t.Fatalf("session URL %q", url)
	}
	driveJupyter(t, url)
}

// An app written for "/": under path routing its redirect to an absolute
// path stays in the session, and its Path=/ cookie is scoped to the
// session, so a second session on the same host never receives it.
func TestPathRoutingWithARedirectingApp(t *testing.T) {
	cfg := testConfig(t)
	cfg.Process.Command = `exec ` + debianPython + ` -c '
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            self.send_response(302)
            self.send_header("Location", "/tree")
            self.send_header("Set-Cookie", "_xsrf=" + os.environ["SPAWNER_SESSION_ID"] + "; Path=/")
            self.end_headers()
            return
        body = ("tree of " + os.environ["SPAWNER_SESSION_ID"] + " cookie=" + self.headers.get("Cookie", "")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
'`
	cfg.Process.StatusSource = "proxy"
	h := start(t, cfg)
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	a, urlA := spawnURL(t, h, `{}`)
	b, urlB := spawnURL(t, h, `{}`)
	resp, err := browser.Get(urlA)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.Request.URL.Path != "/p/"+a+"/tree" || body != "tree of "+a+" cookie=_xsrf="+a {
		t.Errorf("following the app's redirect ended at %s with %q", resp.Request.URL, body)
	}
	resp, err = browser.Get(urlB + "tree")
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); body != "tree of "+b+" cookie=" {
		t.Errorf("session B got %q: session A's cookie leaked to it", body)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// sessionGone reports whether the session's record is gone.
func sessionGone(t *testing.T, h *harness, id string) bool {
	t.Helper()
	code, _ := get(t, h.BaseURL+"/sessions/"+id)
	return code == http.StatusNotFound
}

// servedDir makes a directory the app's uid may read, holding one file of
// size bytes.
func servedDir(t *testing.T, name string, size int64) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "spawner-served-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(dir + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	_ = f.Chmod(0o644)
	_ = f.Close()
	return dir
}
