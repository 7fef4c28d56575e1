package provisioner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// StatusChecker asks an app's /status whether it is listening. Backends use
// it while they wait for a new session to be ready.
type StatusChecker struct {
	http *http.Client
}

// NewStatusChecker returns a checker with a short timeout and no
// keep-alives: each check targets a new instance, and a pooled connection
// would count as activity in the app's /status or TCP table.
func NewStatusChecker() StatusChecker {
	return StatusChecker{http: &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			// Instance addresses are local to the backend; a proxy taken
			// from the environment could not reach them.
			Proxy: nil,
		},
	}}
}

// Listening reports whether url answers the seed's /status with
// "listening": true; when it does not, the error says why.
func (c StatusChecker) Listening(ctx context.Context, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, messages.MaxStatusBytes))
		return false, fmt.Errorf("%s answered %s", url, resp.Status)
	}
	st, err := messages.DecodeAppStatus(resp.Body)
	if err != nil {
		return false, fmt.Errorf("%s: %w", url, err)
	}
	if !st.Listening {
		return false, errors.New("/status says not listening")
	}
	return true, nil
}

// ErrExited is AwaitReady's answer when the app ended before it was ready.
var ErrExited = errors.New("the app exited before it was ready")

// PollInterval is how long AwaitReady waits between checks once elapsed
// has gone by: 1 ms plus a five-hundredth of elapsed, at most 5 ms. An app
// is so seen at most 0.2% + 1 ms after it is ready (5 ms for one that
// takes 2 s, where the doubling backoff this replaces cost up to 50 ms),
// and a slow app costs about 800 checks in its first two seconds, then
// 200 a second. Each check costs a timer wake-up, a refused connect and
// the scheduler's work around them: on a 2-core VM a 2 s wait took
// 130-240 ms of CPU at a thousandth of elapsed, against a budget of a
// tenth of a core (BENCHMARKS.md), and an HTTP poll every 1 ms cost
// 250-350 ms.
func PollInterval(elapsed time.Duration) time.Duration {
	return min(time.Millisecond+elapsed/500, 5*time.Millisecond)
}

// AwaitReady waits until an app is ready: until statusURL says listening,
// or, when statusURL is "", until addr accepts a TCP connection. It
// returns early, with ErrExited and what exited delivered (its zero value
// when it was closed), when the app ends; or with ctx's error and the last
// check's failure when ctx ends first. Backends and the benchmarks share
// it, so that the benchmarks time the wait that ships.
func AwaitReady[E any](ctx context.Context, c StatusChecker, statusURL, addr string, exited <-chan E) (E, error) {
	var none E
	if statusURL == "" && addr == "" {
		return none, errors.New("readiness: no status URL and no address to poll")
	}
	// Until the status server's port accepts, a plain connect answers
	// more cheaply than an HTTP request, whose failed dial costs half as
	// much again in CPU and allocations.
	dialAddr := addr
	if statusURL != "" {
		dialAddr = statusHostPort(statusURL)
	}
	var dialer net.Dialer
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last error
	for {
		ok, err := c.check(ctx, &dialer, dialAddr, statusURL)
		if err == nil || (statusURL != "" && !errors.Is(err, errNotAccepting)) {
			// The port accepts: from now on only /status is asked, so a
			// slow app is not also handed a connection per poll.
			dialAddr = ""
		}
		if ok {
			return none, nil
		}
		// A check cut short by ctx says nothing about the app; the error
		// to report is the last one the app itself gave.
		if err != nil && (ctx.Err() == nil || last == nil) {
			last = err
		}
		timer.Reset(PollInterval(time.Since(start)))
		select {
		case e := <-exited:
			return e, ErrExited
		case <-ctx.Done():
			if last == nil {
				last = fmt.Errorf("%s did not report listening", cmp.Or(statusURL, addr))
			}
			return none, fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-timer.C:
		}
	}
}

// errNotAccepting marks a check whose connect failed: the app's port is
// not open yet.
var errNotAccepting = errors.New("not accepting connections")

// check is one poll of AwaitReady: a connect to dialAddr, then, if there
// is a status URL, the /status request.
func (c StatusChecker) check(ctx context.Context, d *net.Dialer, dialAddr, statusURL string) (bool, error) {
	if dialAddr != "" {
		if refusedNow(dialAddr) {
			return false, fmt.Errorf("%w: connect to %s refused", errNotAccepting, dialAddr)
		}
		conn, err := d.DialContext(ctx, "tcp", dialAddr)
		if err != nil {
			return false, fmt.Errorf("%w: %w", errNotAccepting, err)
		}
		_ = conn.Close()
	}
	if statusURL == "" {
		return true, nil
	}
	return c.Listening(ctx, statusURL)
}

// statusHostPort is the host:port a status URL's server listens on, or ""
// when it cannot tell, in which case every poll is a /status request.
func statusHostPort(statusURL string) string {
	u, err := url.Parse(statusURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return ""
	}
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
}
