package gateway

import (
	"bytes"
	"io"
	"net/http"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/spawnerhq/spawner/messages"
)

// The fast server carries session traffic. A plain request to a live
// session, with its token if one is needed, is proxied here with pooled requests and responses and
// no per-request goroutine, as nginx does it. Anything else on the same
// connection (an upgrade, a first visit with the token in the query, a
// session not yet in the route table, an error to answer)
// goes, with the rest of its connection, to the standard server (see
// handOver), so it is decided in one place: proxySession and the API.
//
// net/http's per-request work on the browser's side was most of the
// gateway's CPU per proxied request in the benchmark's profile, which is
// why this side of the proxy is fasthttp too.

const (
	// fastHeaderLimit bounds a request's head. It is also each fast
	// connection's read buffer, so it is kept to nginx's order (its
	// large_client_header_buffers is 4 × 8 KiB).
	fastHeaderLimit = 32 << 10
)

// newFastServer builds the fast server; what it does not serve goes, with
// the rest of its connection, to the standard server through std.
func (g *Gateway) newFastServer(std *connListener, headerTimeout, idleTimeout time.Duration) *fasthttp.Server {
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if !g.serveFast(ctx) {
				handOver(ctx, std)
				return
			}
			if ctx.Request.IsBodyStream() {
				// The server reads and drops what the handler left of a
				// body once the answer is out; a client that stopped
				// sending must not hold the connection while it waits.
				_ = ctx.SetReadDeadline(time.Now().Add(headerTimeout))
			}
		},
		// ReadTimeout covers a request's head, as ReadHeaderTimeout does
		// on the standard server; bodies have deadlines of their own.
		ReadTimeout:    headerTimeout,
		IdleTimeout:    idleTimeout,
		ReadBufferSize: fastHeaderLimit,
		HeaderReceived: g.fastBodyConfig,
		// A connection handed over is net/http's to close.
		KeepHijackedConns:            true,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
		Logger:                       fastLogger{g},
	}
}

// serveFast proxies ctx's request if it is one the fast path takes, and
// reports whether it did; it answers nothing otherwise.
func (g *Gateway) serveFast(ctx *fasthttp.RequestCtx) bool {
	h := &ctx.Request.Header
	if !fastMethod(h.Method()) || h.Peek("Upgrade") != nil || h.Peek("Expect") != nil {
		return false
	}
	uri := h.RequestURI()
	path, query, _ := bytes.Cut(uri, []byte("?"))
	if !cleanPath(path) {
		return false // net/http's mux cleans or redirects it
	}
	host := h.Host()
	a, ok := g.router.addressOf(b2s(host), b2s(path))
	if !ok || a.rest == "" || !validSessionID(a.id) {
		return false
	}
	rt, ok := g.routes.lookup(a.id)
	if !ok {
		return false
	}
	var token []byte
	if g.tokens != nil {
		// A token in the query becomes a cookie and a redirect, which the
		// standard path does; "%" could hide its name.
		if bytes.Contains(query, []byte(sessionTokenQuery)) || bytes.IndexByte(query, '%') >= 0 {
			return false
		}
		if token = h.Peek(sessionTokenHeader); len(token) == 0 {
			token = cookieValue(h.RawHeaders(), sessionTokenCookie)
		}
		if !g.tokens.Valid(a.id, b2s(token)) {
			return false // The standard path answers 401.
		}
	}
	mode := g.router.mode
	if rt.mode != "" && mode != messages.RoutingSubdomain {
		mode = rt.mode
	}
	prefix := ""
	if mode == messages.RoutingPath {
		prefix = a.prefix
	}

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.DisableSpecialHeader()
	req.UseHostHeader = true
	req.Header.SetMethodBytes(h.Method())
	req.Header.SetRequestURIBytes(uri[len(prefix):])
	copyRawRequestHeaders(&req.Header, h.RawHeaders(), g.tokens != nil, token)
	req.Header.SetBytesV("Host", host)
	var ipBuf [64]byte
	ip, _ := ctx.RemoteIP().AppendText(ipBuf[:0])
	req.Header.SetBytesV("X-Forwarded-For", ip)
	req.Header.SetBytesV("X-Forwarded-Host", host)
	if ctx.IsTLS() {
		req.Header.Set("X-Forwarded-Proto", "https")
	} else {
		req.Header.Set("X-Forwarded-Proto", "http")
	}
	if prefix != "" {
		req.Header.Set("X-Forwarded-Prefix", prefix)
	}
	var done func()
	if rt.act != nil {
		done = rt.act.begin(false)
	}
	if ctx.Request.IsBodyStream() {
		// Bodies always stream (see fastBodyConfig), under the same guard
		// as on the standard path.
		var body io.ReadCloser = &fastRequestBody{r: ctx.RequestBodyStream(), act: rt.act, m: g.mx}
		if g.cfg.ProxyBodyIdle >= 0 {
			body = g.newGuardedBody(body, ctx, int64(h.ContentLength()))
		} else {
			_ = ctx.SetReadDeadline(time.Time{})
		}
		req.SetBodyStream(body, h.ContentLength())
	}
	up := fasthttp.AcquireResponse()
	up.Header.SetNoDefaultContentType(true)
	if err := g.proxy.fast.client(rt.upstream).Do(req, up); err != nil {
		fasthttp.ReleaseResponse(up)
		if done != nil {
			done()
		}
		g.log.Debug("upstream error", "session_id", a.id, "err", err)
		fastError(ctx, http.StatusBadGateway, messages.Errorf(messages.CodeUnavailable, "the session's app is not answering"))
		g.fastAnswered(http.StatusBadGateway)
		return true
	}
	status := up.StatusCode()
	copyFastResponseHeader(&ctx.Response.Header, &up.Header, prefix, rt.upstream, b2s(host))
	ctx.SetStatusCode(status)
	g.fastAnswered(status)
	body := &fastBody{up: up, act: rt.act, done: done, m: g.mx}
	if !bodyAllowed(status) {
		_ = body.Close()
		return true
	}
	if up.BodyStream() == nil {
		ctx.Response.SetBody(up.Body())
		if g.mx != nil {
			g.mx.ProxyBytesOut(len(up.Body()))
		}
		_ = body.Close()
		return true
	}
	body.r = up.BodyStream()
	size := up.Header.ContentLength()
	if size < 0 {
		// Chunked or until close: a stream, such as server-sent events,
		// whose head must reach the browser before its first event. Each
		// chunk is flushed as it is read.
		size = -1
		ctx.Response.ImmediateHeaderFlush = true
	}
	ctx.Response.SetBodyStream(body, size)
	return true
}

func (g *Gateway) fastAnswered(status int) {
	if g.mx != nil {
		g.mx.ProxyAnswered(status)
	}
}

// fastMethod lists the methods the fast path proxies. HEAD goes the
// standard way, which keeps the app's Content-Length on a bodiless answer.
func fastMethod(m []byte) bool {
	switch string(m) {
	case "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
		return true
	}
	return false
}

// cleanPath reports whether a raw request path is one net/http's mux
// would take as it is: absolute, nothing escaped, no empty, "." or ".."
// segment.
func cleanPath(p []byte) bool {
	if len(p) == 0 || p[0] != '/' || bytes.IndexByte(p, '%') >= 0 || bytes.Contains(p, []byte("//")) {
		return false
	}
	return !bytes.Contains(p, []byte("/./")) && !bytes.Contains(p, []byte("/../")) &&
		!bytes.HasSuffix(p, []byte("/.")) && !bytes.HasSuffix(p, []byte("/.."))
}

// copyRawRequestHeaders copies the browser's headers, as it sent them, to
// the app's request, leaving out what the proxy never forwards (see
// skipRequestHeader) and, where session tokens are in force, the token.
func copyRawRequestHeaders(dst *fasthttp.RequestHeader, raw []byte, tokens bool, token []byte) {
	var connection []string
	if v, ok := headerValue(raw, "connection"); ok {
		connection = []string{string(v)}
	}
	for len(raw) > 0 {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte("\n"))
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		key := http.CanonicalHeaderKey(b2s(bytes.TrimSpace(k)))
		if skipRequestHeader(key) || (connection != nil && listedIn(connection, key)) {
			continue
		}
		if tokens {
			switch key {
			case sessionTokenHeader:
				continue
			case "Referer":
				if mentionsToken(b2s(v), b2s(token)) {
					continue
				}
			case "Cookie":
				kept := withoutCookie(b2s(v), sessionTokenCookie)
				if kept == "" {
					continue
				}
				v = []byte(kept)
			}
		}
		dst.AddBytesV(key, v)
	}
}

// cookieValue finds a cookie in a raw header block.
func cookieValue(raw []byte, name string) []byte {
	for len(raw) > 0 {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte("\n"))
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || !bytes.EqualFold(bytes.TrimSpace(k), []byte("Cookie")) {
			continue
		}
		for pair := range bytes.SplitSeq(v, []byte(";")) {
			n, val, _ := bytes.Cut(pair, []byte("="))
			if string(bytes.TrimSpace(n)) == name {
				return bytes.TrimSpace(val)
			}
		}
	}
	return nil
}

// copyFastResponseHeader copies the app's response header, less the
// hop-by-hop ones and the body framing the server redoes, rewriting
// Location and Set-Cookie under path routing as rewriteResponse does.
func copyFastResponseHeader(dst *fasthttp.ResponseHeader, src *fasthttp.ResponseHeader, prefix, upstream, publicHost string) {
	connection := src.Peek("Connection")
	for k, v := range src.All() {
		key := headerKey(k)
		if key == "Content-Length" || skipResponseHeader(key) ||
			(len(connection) > 0 && listedIn([]string{string(connection)}, key)) {
			continue
		}
		if prefix != "" {
			switch key {
			case "Location":
				if fixed, ok := rewriteLocation(string(v), prefix, upstream, publicHost); ok {
					v = []byte(fixed)
				}
			case "Set-Cookie":
				v = []byte(rewriteCookiePath(string(v), prefix))
			}
		}
		dst.AddBytesKV(k, v)
	}
}

// b2s views b as a string without copying, for lookups that do not keep
// it.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
