package gateway

import (
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// The server has no ReadTimeout, because it would also end event streams
// and WebSockets; request bodies get deadlines of their own here instead.
// Before them a body trickled at 1 byte/s was read for as long as the
// client cared to send it, holding a connection and, through the proxy, an
// upstream connection too.

// readBody reads an API request body of at most MaxRequestBytes, within
// APIBodyTimeout.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if g.cfg.APIBodyTimeout <= 0 {
		return io.ReadAll(http.MaxBytesReader(w, r.Body, messages.MaxRequestBytes))
	}
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(g.cfg.APIBodyTimeout)); err != nil {
		return io.ReadAll(http.MaxBytesReader(w, r.Body, messages.MaxRequestBytes))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, messages.MaxRequestBytes))
	if err == nil {
		// Lifted once the body is in: the connection's background read,
		// which notices a client leaving, must not time out during the
		// spawn. After a failure it stays, so that the server's attempt
		// to discard the rest of the body fails at once too.
		_ = rc.SetReadDeadline(time.Time{})
	}
	return body, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// guardBody makes r's body fail once nothing has arrived for ProxyBodyIdle,
// or once, after that long, it arrives slower than ProxyBodyMinRate on
// average. The proxy then gives up on the request and its upstream.
func (g *Gateway) guardBody(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 || g.cfg.ProxyBodyIdle < 0 {
		return
	}
	r.Body = g.newGuardedBody(r.Body, http.NewResponseController(w), r.ContentLength)
}

// newGuardedBody guards body, of the declared size (-1 when chunked), by
// setting read deadlines through rc.
func (g *Gateway) newGuardedBody(body io.ReadCloser, rc readDeadliner, size int64) *guardedBody {
	return &guardedBody{ReadCloser: body, rc: rc, start: time.Now(),
		idle: g.cfg.ProxyBodyIdle, minRate: g.cfg.ProxyBodyMinRate, size: size}
}

// readDeadliner sets a connection's read deadline: net/http's
// ResponseController or the fast server's request.
type readDeadliner interface {
	SetReadDeadline(time.Time) error
}

type guardedBody struct {
	io.ReadCloser
	rc      readDeadliner
	start   time.Time
	idle    time.Duration
	minRate int64
	n       int64
	// size is the declared length, -1 when chunked. A reader that stops
	// at the declared length never sees EOF, so reaching it counts as
	// the end too.
	size int64
	done bool
}

func (b *guardedBody) Read(p []byte) (int, error) {
	if !b.done {
		deadline := time.Now().Add(b.idle)
		if b.minRate > 0 {
			// By then the bytes so far, plus one, are due at minRate.
			due := b.start.Add(b.idle + time.Duration(float64(b.n+1)/float64(b.minRate)*float64(time.Second)))
			if due.Before(deadline) {
				deadline = due
			}
		}
		if err := b.rc.SetReadDeadline(deadline); err != nil {
			b.done = true // This connection takes no deadlines; read unguarded.
		}
	}
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err == nil && b.size > 0 && b.n >= b.size && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	if err != nil && !b.done {
		b.done = true
		if errors.Is(err, io.EOF) {
			// The whole body is in. The deadline must not outlive it: the
			// response may take long, and the connection's background read,
			// which starts now, would time out. After any other error it
			// stays, so that the server's attempt to discard the rest of a
			// trickled body fails at once too.
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}
