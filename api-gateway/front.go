package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/spawnerhq/spawner/messages"
	"github.com/valyala/fasthttp"
)

// The front sorts connections between the gateway's two HTTP servers.
// Session traffic goes to the fast server (fastserve.go), everything else
// (the API, the dashboard, event streams) to net/http, whose semantics the
// API's tests pin down. A connection is sorted once, by its first request:
// browsers keep a connection per origin, so one that opened on a session
// path carries that session's traffic.

// frontPeekSize bounds how much of a first request is read to sort its
// connection: the request line under the path modes, the whole head under
// subdomain routing, which needs the Host header.
const frontPeekSize = 8 << 10

// front accepts connections and hands each to the server that suits it.
type front struct {
	router      router
	headerLimit time.Duration
	fast, std   *connListener

	// conns are the connections sorted to the fast server.
	conns connSet
}

func newFront(ln net.Listener, rt router, headerLimit time.Duration) *front {
	return &front{router: rt, headerLimit: headerLimit,
		fast: newConnListener(ln.Addr()), std: newConnListener(ln.Addr())}
}

// serve accepts from ln until it is closed.
func (f *front) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			f.fast.Close()
			f.std.Close()
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go f.sort(c)
	}
}

// sort reads the start of c's first request, under the header deadline,
// and passes c on with what was read still to be read.
func (f *front) sort(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(f.headerLimit))
	br := bufio.NewReaderSize(c, frontPeekSize)
	head, complete := peekHead(br, f.router.mode == messages.RoutingSubdomain)
	if len(head) == 0 {
		_ = c.Close() // Nothing arrived: a port scan or a timeout.
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, br: br, f: f}
	to := f.std
	if complete && f.isSession(head) {
		to = f.fast
		f.conns.add(pc)
	}
	if !to.give(pc) {
		_ = pc.Close()
	}
}

// isSession reports whether a request head addresses a session.
func (f *front) isSession(head []byte) bool {
	line, rest, _ := bytes.Cut(head, []byte("\n"))
	if f.router.mode != messages.RoutingSubdomain {
		_, target, _ := bytes.Cut(line, []byte(" "))
		return bytes.HasPrefix(target, []byte("/p/"))
	}
	host, ok := headerValue(rest, "host")
	if !ok {
		return false
	}
	_, ok = f.router.sessionHost(string(host))
	return ok
}

// peekHead returns the buffered start of the first request: at least its
// request line, and with wholeHead its whole header block. complete says
// whether that much arrived within the buffer and the deadline.
func peekHead(br *bufio.Reader, wholeHead bool) ([]byte, bool) {
	want := []byte("\n")
	if wholeHead {
		want = []byte("\r\n\r\n")
	}
	for n := 1; ; n = br.Buffered() + 1 {
		// Peek waits for n bytes; whatever else came with them is
		// looked at too before waiting for more.
		_, err := br.Peek(n)
		b, _ := br.Peek(br.Buffered())
		if bytes.Contains(b, want) {
			return b, true
		}
		if err != nil || len(b) >= br.Size() {
			return b, false
		}
	}
}

// headerValue finds a header in a raw header block, by its lower-case
// name, and returns its value trimmed.
func headerValue(block []byte, name string) ([]byte, bool) {
	for len(block) > 0 {
		var line []byte
		line, block, _ = bytes.Cut(block, []byte("\n"))
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && len(k) == len(name) && bytes.EqualFold(k, []byte(name)) {
			return bytes.TrimSpace(v), true
		}
	}
	return nil, false
}

// closeFast closes the fast server's connections still open after the
// drain, as net/http's Close does for its own.
func (f *front) closeFast() { f.conns.closeAll() }

// peekedConn is a connection whose first bytes sit in a reader.
type peekedConn struct {
	net.Conn
	f *front

	mu sync.Mutex
	br *bufio.Reader // nil once drained, to free its buffer
}

func (c *peekedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	br := c.br
	if br != nil && br.Buffered() == 0 {
		c.br, br = nil, nil
	}
	c.mu.Unlock()
	if br != nil {
		return br.Read(p)
	}
	return c.Conn.Read(p)
}

func (c *peekedConn) Close() error {
	c.f.conns.remove(c)
	return c.Conn.Close()
}

// connListener is a net.Listener fed by the front.
type connListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// give hands c to the server; false once the listener is closed.
func (l *connListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// handOver gives ctx's connection, from its current request on, to the
// standard server: the request is written out again as it came, ahead of
// whatever else the connection brings. Nothing of it has been answered or
// consumed, because fastBodyConfig keeps all but a body's first byte
// unread. The standard server then serves the connection to its end, so a
// handler that outlives the request (an upgraded WebSocket, an event
// stream) never refers to the fast server's recycled request.
func handOver(ctx *fasthttp.RequestCtx, std *connListener) {
	h := &ctx.Request.Header
	head := make([]byte, 0, 256+len(h.RawHeaders()))
	head = append(head, h.Method()...)
	head = append(head, ' ')
	head = append(head, h.RequestURI()...)
	head = append(head, ' ')
	head = append(head, h.Protocol()...)
	head = append(head, "\r\n"...)
	if raw := h.RawHeaders(); len(raw) > 0 {
		head = append(head, raw...)
	} else {
		head = append(head, "\r\n"...)
	}
	if ctx.Request.IsBodyStream() {
		// Only the first byte was read ahead, and the stream serves it
		// first; a chunked body was not read at all.
		if h.ContentLength() > 0 {
			var b [1]byte
			n, _ := io.ReadFull(ctx.RequestBodyStream(), b[:])
			head = append(head, b[:n]...)
		}
	} else {
		head = append(head, ctx.Request.Body()...)
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		if !std.give(&replayConn{Conn: c, pending: head}) {
			_ = c.Close()
		}
	})
}

// replayConn is a connection whose first bytes to read are pending.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
