package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"

	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/messages"
)

func (g *Gateway) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if g.mx == nil {
		writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "metrics are off in this process"))
		return
	}
	g.mx.Handler().ServeHTTP(w, r)
}

// handleProxy is the /p/<id>/ route: proxySession, measured when metrics
// are on. Measuring wraps the writer and body, so it costs nothing when off.
func (g *Gateway) handleProxy(w http.ResponseWriter, r *http.Request) {
	m := g.mx
	if m == nil {
		g.proxySession(w, r)
		return
	}
	mw := &meteredWriter{ResponseWriter: w, m: m}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &meteredBody{ReadCloser: r.Body, m: m}
	}
	g.proxySession(mw, r)
	if mw.hijacked {
		// The upgraded connection is closed by the time the proxy returns.
		m.WebSocketClosed()
		m.ProxyAnswered(http.StatusSwitchingProtocols)
		return
	}
	if mw.status != 0 {
		m.ProxyAnswered(mw.status)
	}
}

// meteredWriter records the status and counts the bytes sent to the
// browser. It unwraps for http.ResponseController, which is how the
// reverse proxy flushes, and meters the connection it hijacks for
// WebSockets.
type meteredWriter struct {
	http.ResponseWriter
	m        *metrics.Metrics
	status   int
	hijacked bool
}

func (w *meteredWriter) WriteHeader(code int) {
	// 1xx answers other than 101 are interim; the final status follows.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *meteredWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.m.ProxyBytesOut(n)
	return n, err
}

func (w *meteredWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *meteredWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.hijacked = true
	w.m.WebSocketOpened()
	return &meteredConn{Conn: conn, m: w.m}, brw, nil
}

// meteredConn counts an upgraded connection's bytes in both directions.
type meteredConn struct {
	net.Conn
	m *metrics.Metrics
}

func (c *meteredConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.m.ProxyBytesIn(n)
	return n, err
}

func (c *meteredConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.m.ProxyBytesOut(n)
	return n, err
}

// meteredBody counts a request body's bytes as the proxy reads them.
type meteredBody struct {
	io.ReadCloser
	m *metrics.Metrics
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.m.ProxyBytesIn(n)
	return n, err
}
