package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/messages"
)

// servers are the gateway's HTTP servers on one listener.
type servers struct {
	ln    net.Listener
	std   *http.Server
	fast  *fasthttp.Server
	front *front
	// upstreams are the fast proxy's connections to apps.
	upstreams *upstreamConns
	failed    chan error
	wg        sync.WaitGroup
}

// startServers serves ln: through the front, which sends session
// connections to the fast server, or with net/http alone.
func (g *Gateway) startServers(std *http.Server, ln net.Listener, headerTimeout, idleTimeout time.Duration) *servers {
	s := &servers{ln: ln, std: std, failed: make(chan error, 3)}
	run := func(serve func() error) {
		s.wg.Go(func() {
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				s.failed <- err
			}
		})
	}
	if !g.cfg.ProxyFast {
		run(func() error { return std.Serve(ln) })
		return s
	}
	s.front = newFront(ln, g.router, headerTimeout)
	s.upstreams = &g.proxy.fast.conns
	s.fast = g.newFastServer(s.front.std, headerTimeout, idleTimeout)
	run(func() error { return s.front.serve(ln) })
	run(func() error { return s.fast.Serve(s.front.fast) })
	run(func() error { return std.Serve(s.front.std) })
	return s
}

// shutdown stops taking connections and lets requests in flight finish
// until ctx ends, then closes what is left.
func (s *servers) shutdown(ctx context.Context, log *slog.Logger) {
	_ = s.ln.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.std.Shutdown(ctx); err != nil {
			log.Warn("drain cut short", "err", err)
			_ = s.std.Close()
		}
	})
	if s.fast != nil {
		wg.Go(func() {
			if err := s.fast.ShutdownWithContext(ctx); err != nil {
				log.Warn("drain of session connections cut short", "err", err)
				s.front.closeFast()
				s.upstreams.closeAll()
			}
		})
	}
	wg.Wait()
	s.wg.Wait()
}

// connSet is a set of open connections, for closing those a drain left.
type connSet struct {
	mu  sync.Mutex
	set map[net.Conn]struct{}
}

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	if s.set == nil {
		s.set = map[net.Conn]struct{}{}
	}
	s.set[c] = struct{}{}
	s.mu.Unlock()
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.set, c)
	s.mu.Unlock()
}

// closeAll closes every connection in the set.
func (s *connSet) closeAll() {
	s.mu.Lock()
	open := make([]net.Conn, 0, len(s.set))
	for c := range s.set {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

// upstreamConns are the fast proxy's open connections to apps.
type upstreamConns struct{ connSet }

type upstreamConn struct {
	net.Conn
	in *upstreamConns
}

func (u *upstreamConns) add(c net.Conn) net.Conn {
	uc := &upstreamConn{Conn: c, in: u}
	u.connSet.add(uc)
	return uc
}

func (c *upstreamConn) Close() error {
	c.in.remove(c)
	return c.Conn.Close()
}

// fastBody streams an app's response body to the browser. The server
// closes it once the body is written or the write failed; only then is
// the request over for the activity count and the upstream connection
// free again.
type fastBody struct {
	up   *fasthttp.Response
	r    io.Reader
	act  *sessionActivity
	done func()
	m    *metrics.Metrics
}

func (b *fastBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		if b.act != nil {
			b.act.touch()
		}
		if b.m != nil {
			b.m.ProxyBytesOut(n)
		}
	}
	return n, err
}

func (b *fastBody) Close() error {
	if b.up == nil {
		return nil
	}
	err := b.up.CloseBodyStream()
	fasthttp.ReleaseResponse(b.up)
	b.up = nil
	if b.done != nil {
		b.done()
	}
	return err
}

// fastRequestBody counts a request body on its way to the app.
type fastRequestBody struct {
	r   io.Reader
	act *sessionActivity
	m   *metrics.Metrics
}

func (b *fastRequestBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		if b.act != nil {
			b.act.touch()
		}
		if b.m != nil {
			b.m.ProxyBytesIn(n)
		}
	}
	return n, err
}

func (b *fastRequestBody) Close() error { return nil }

// fastBodyConfig makes every request body stream rather than be read
// before the handler runs: fasthttp would read a small body under the
// header deadline alone, where the proxy's body guard must apply. Only
// its first byte is read ahead, within the guard's idle limit.
func (g *Gateway) fastBodyConfig(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if h.ContentLength() <= 0 {
		return fasthttp.RequestConfig{}
	}
	c := fasthttp.RequestConfig{MaxRequestBodySize: 1}
	if g.cfg.ProxyBodyIdle > 0 {
		c.ReadTimeout = g.cfg.ProxyBodyIdle
	}
	return c
}

// fastError answers as writeError does.
func fastError(ctx *fasthttp.RequestCtx, status int, e *messages.Error) {
	body, _ := json.Marshal(errorBody{Error: e})
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.Response.Header.Set("Content-Type", "application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBody(append(body, '\n'))
}

// fastLogger sends fasthttp's own messages, about malformed requests and
// broken connections, to the gateway's debug log.
type fastLogger struct{ g *Gateway }

func (l fastLogger) Printf(format string, args ...any) {
	l.g.log.Debug("fast server", "msg", strings.TrimSpace(fmt.Sprintf(format, args...)))
}
