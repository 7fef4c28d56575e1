package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/spawnerhq/spawner/messages"
)

// fastProxy is the proxy's hot path for plain HTTP requests. The server
// side stays net/http, so routing, timeouts, draining and metrics are the
// gateway's own; only the upstream side is a lean HTTP/1.1 client with
// pooled requests, responses and buffers and no goroutine hand-offs. In
// the benchmarks (BENCHMARKS.md) this cut the gateway's CPU per proxied
// request to about a third. Upgrades (WebSockets) and the rare requests
// it does not model go to the standard reverse proxy instead.
type fastProxy struct {
	idle time.Duration
	log  *slog.Logger
	// fallback serves what the fast path does not: upgrades, 100-continue.
	fallback http.Handler

	// conns are the open upstream connections, which a shutdown whose
	// drain ran out closes, so that no read stays parked on an idle
	// stream whose browser is gone.
	conns upstreamConns

	mu        sync.RWMutex
	clients   map[string]*fasthttp.HostClient
	lastSweep time.Time
	bufs      sync.Pool
}

const (
	// fastBufSize is the copy buffer for response bodies; one read of a
	// typical response fills it once.
	fastBufSize = 32 << 10
	// maxUpstreamHeader bounds an upstream's response header; it is also
	// the read buffer of each request in flight. nginx's default is 4 KiB.
	maxUpstreamHeader = 16 << 10
	// headDelay is how long a response's head waits for its body's
	// first bytes (copyBody).
	headDelay = time.Millisecond
	// clientSweepAge is how long an upstream's client may go unused with
	// no connections before it is dropped; sessions come and go.
	clientSweepAge = time.Minute
)

func newFastProxy(upstreamIdle time.Duration, fallback http.Handler, log *slog.Logger) *fastProxy {
	f := &fastProxy{idle: upstreamIdle, log: log, fallback: fallback, clients: map[string]*fasthttp.HostClient{}}
	f.bufs.New = func() any { b := make([]byte, fastBufSize); return &b }
	return f
}

// client returns the connection pool for one upstream.
func (f *fastProxy) client(upstream string) *fasthttp.HostClient {
	f.mu.RLock()
	c := f.clients[upstream]
	f.mu.RUnlock()
	if c != nil {
		return c
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c = f.clients[upstream]; c != nil {
		return c
	}
	f.sweepLocked()
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	c = &fasthttp.HostClient{
		Addr: upstream,
		Dial: func(addr string) (net.Conn, error) {
			conn, err := dialer.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			return f.conns.add(conn), nil
		},
		// Requests wait for a connection rather than fail when a burst
		// exceeds the pool.
		MaxConns:           4096,
		MaxConnWaitTimeout: 5 * time.Second,
		// Pooled connections count as users in an app's TCP table, so they
		// are closed as soon as the gateway's setting says.
		MaxIdleConnDuration:      f.idle,
		ReadBufferSize:           maxUpstreamHeader,
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
		StreamResponseBody:       true,
	}
	f.clients[upstream] = c
	return c
}

// sweepLocked drops the clients of upstreams nobody has used for a while.
// It runs when a client is added, at most every few seconds.
func (f *fastProxy) sweepLocked() {
	now := time.Now()
	if now.Sub(f.lastSweep) < 10*time.Second {
		return
	}
	f.lastSweep = now
	for up, c := range f.clients {
		if now.Sub(c.LastUseTime()) > clientSweepAge && c.ConnsCount() == 0 {
			delete(f.clients, up)
		}
	}
}

func (f *fastProxy) closeIdle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.clients {
		c.CloseIdleConnections()
	}
}

// forward sends r, whose path is already the one the app sees, as fwd
// says.
func (f *fastProxy) forward(w http.ResponseWriter, r *http.Request, fwd forwarding) {
	if !fastEligible(r) {
		if fwd.act != nil {
			w = &activityWriter{ResponseWriter: w, act: fwd.act}
		}
		f.fallback.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardingKey{}, fwd)))
		return
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	buildUpstreamRequest(req, r, fwd.prefix)
	// An absent Content-Type must stay absent rather than become
	// fasthttp's default.
	resp.Header.SetNoDefaultContentType(true)
	if err := f.client(fwd.upstream).Do(req, resp); err != nil {
		f.upstreamFailed(w, r, err)
		return
	}
	copyResponseHeader(w.Header(), &resp.Header)
	if fwd.prefix != "" {
		rewriteResponse(w.Header(), fwd.prefix, fwd.upstream, fwd.publicHost)
	}
	w.WriteHeader(resp.StatusCode())
	if r.Method == http.MethodHead || !bodyAllowed(resp.StatusCode()) {
		return
	}
	f.copyBody(w, r, resp, fwd.act)
}

// fastEligible reports whether r is plain HTTP the fast path models.
func fastEligible(r *http.Request) bool {
	if r.ProtoMajor != 1 {
		return false
	}
	if _, ok := r.Header["Upgrade"]; ok {
		return false
	}
	if _, ok := r.Header["Expect"]; ok {
		return false
	}
	return len(r.Trailer) == 0
}

// buildUpstreamRequest copies r into req as the standard proxy's Rewrite
// would: hop-by-hop headers dropped, X-Forwarded-* set from what the
// gateway saw, the original Host kept. Headers go out raw, without
// fasthttp's parsing of cookies and the like, so they reach the app as the
// browser sent them.
func buildUpstreamRequest(req *fasthttp.Request, r *http.Request, prefix string) {
	req.Header.DisableSpecialHeader()
	req.UseHostHeader = true
	req.Header.SetMethod(r.Method)
	var buf [256]byte // most request targets fit, and then nothing is allocated
	uri := append(buf[:0], r.URL.EscapedPath()...)
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		uri = append(uri, '?')
		uri = append(uri, r.URL.RawQuery...)
	}
	req.Header.SetRequestURIBytes(uri)
	req.Header.Add("Host", r.Host)
	connection := r.Header["Connection"]
	for k, vv := range r.Header {
		if skipRequestHeader(k) || listedIn(connection, k) {
			continue
		}
		for _, v := range vv {
			req.Header.Add(k, v)
		}
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		req.Header.Add("X-Forwarded-For", ip)
	}
	req.Header.Add("X-Forwarded-Host", r.Host)
	if r.TLS != nil {
		req.Header.Add("X-Forwarded-Proto", "https")
	} else {
		req.Header.Add("X-Forwarded-Proto", "http")
	}
	if prefix != "" {
		req.Header.Add("X-Forwarded-Prefix", prefix)
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		size := -1 // chunked
		if r.ContentLength > 0 {
			size = int(r.ContentLength)
		}
		req.SetBodyStream(r.Body, size)
	}
}

// skipRequestHeader names the headers the proxy never forwards: hop-by-hop
// ones, the body framing it redoes itself, and headers a client could forge.
func skipRequestHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length", "Host":
		return true
	}
	return forgedHeader(k)
}

func skipResponseHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// listedIn reports whether the Connection header values name k, which
// makes k hop-by-hop too.
func listedIn(connection []string, k string) bool {
	for _, v := range connection {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), k) {
				return true
			}
		}
	}
	return false
}

func copyResponseHeader(dst http.Header, src *fasthttp.ResponseHeader) {
	connection := src.Peek("Connection")
	for k, v := range src.All() {
		key := headerKey(k)
		if skipResponseHeader(key) || (len(connection) > 0 && listedIn([]string{string(connection)}, key)) {
			continue
		}
		dst[key] = append(dst[key], string(v))
	}
	if _, ok := dst["Content-Type"]; !ok {
		// Like the standard proxy: an app that sent no type gets none, not
		// one sniffed by the gateway.
		dst["Content-Type"] = nil
	}
}

// headerKey returns common header names without allocating; the
// upstream's names arrive canonical, as net/http's map wants them.
func headerKey(k []byte) string {
	switch string(k) {
	case "Content-Type":
		return "Content-Type"
	case "Content-Length":
		return "Content-Length"
	case "Date":
		return "Date"
	case "Server":
		return "Server"
	case "Set-Cookie":
		return "Set-Cookie"
	case "Cache-Control":
		return "Cache-Control"
	case "Etag":
		return "Etag"
	case "Last-Modified":
		return "Last-Modified"
	case "Content-Encoding":
		return "Content-Encoding"
	case "Vary":
		return "Vary"
	}
	return string(k)
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// copyBody streams the upstream body to the browser. A body that arrives
// in one read is written once and sent when the handler returns; anything
// longer is flushed read by read, so chunked responses and server-sent
// events reach the browser as the app writes them.
//
// act, when set, is touched per chunk, so a long download read slowly
// keeps its session busy for as long as bytes move.
func (f *fastProxy) copyBody(w http.ResponseWriter, r *http.Request, resp *fasthttp.Response, act *sessionActivity) {
	body := resp.BodyStream()
	if body == nil {
		_, _ = w.Write(resp.Body())
		return
	}
	bp := f.bufs.Get().(*[]byte)
	defer f.bufs.Put(bp)
	buf := *bp
	rc := http.NewResponseController(w)
	// The head waits up to headDelay for the body's first bytes, to go
	// out with them in one write; past that it goes alone, so an app that
	// sends its head and then waits, as an event stream does, is seen to
	// answer at once, as behind nginx. The head used to wait for the
	// first bytes however long they took, and a browser waited with it.
	headSent := make(chan struct{})
	headTimer := time.AfterFunc(headDelay, func() {
		defer close(headSent)
		_ = rc.Flush()
	})
	var stopWatch func() bool
	var watchDone chan struct{}
	defer func() {
		if stopWatch != nil && !stopWatch() {
			<-watchDone // The watcher is closing the body; let it finish first.
		}
	}()
	for first := true; ; first = false {
		n, err := body.Read(buf)
		if first && !headTimer.Stop() {
			<-headSent // The head is being flushed; let it finish first.
		}
		if n > 0 {
			if act != nil {
				act.touch()
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				_ = resp.CloseBodyStream()
				return
			}
		}
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			if r.Context().Err() == nil {
				f.log.Debug("upstream body", "path", r.URL.Path, "err", err)
			}
			// Abort like the standard proxy, so the browser sees a broken
			// response rather than a short one that looks complete.
			panic(http.ErrAbortHandler)
		}
		if first {
			// More is coming. A browser that leaves must not keep a read
			// parked on an idle event stream, so closing the body
			// interrupts it.
			watchDone = make(chan struct{})
			stopWatch = context.AfterFunc(r.Context(), func() {
				defer close(watchDone)
				if c, ok := body.(fasthttp.ReadCloserWithError); ok {
					_ = c.CloseWithError(context.Canceled)
				}
			})
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (f *fastProxy) upstreamFailed(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	f.log.Debug("upstream error", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusBadGateway, messages.Errorf(messages.CodeUnavailable, "the session's app is not answering"))
}

// validSessionID is messages.ValidSessionID without the regular
// expression, for the per-request path; a test holds the two equal.
func validSessionID(id string) bool {
	if len(id) != 26 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}
