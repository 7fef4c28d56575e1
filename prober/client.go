package prober

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// statusClient probes one target over one kept-alive connection. It is
// not an http.Client because an idle net/http connection holds two
// goroutines and two 4 KiB buffers: at 10,000 sessions that was 20,000
// goroutines and over 300 MB of the control plane's memory. Here an idle
// target holds only its socket; buffers are shared and responses are read
// with net/http's own parser.
type statusClient struct {
	uri     string // the request target: path and query
	host    string // the Host header
	addr    string // host:port to dial
	tls     bool
	idleFor time.Duration
	err     error
	// budget bounds the connections kept across the prober's targets;
	// while conn is set (or taken out by a probe), one unit is held.
	budget *connBudget

	mu       sync.Mutex
	conn     net.Conn
	lastUsed time.Time
	// closed is set once the target is gone: a probe in flight then closes
	// its connection rather than keep it where nothing would close it.
	closed bool
}

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

func newStatusClient(statusURL string, cfg Config, budget *connBudget) *statusClient {
	u, err := url.Parse(statusURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &statusClient{err: fmt.Errorf("status URL %q is not an http(s) URL", statusURL)}
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	// Kept between rounds: reconnecting to thousands of targets every
	// interval costs more than holding them.
	return &statusClient{uri: u.RequestURI(), host: u.Host, addr: addr, tls: u.Scheme == "https",
		idleFor: 2*cfg.ProbeInterval + time.Second, budget: budget}
}

// fetch reads the target's /status within timeout.
func (c *statusClient) fetch(timeout time.Duration) (messages.AppStatus, error) {
	if c.err != nil {
		return messages.AppStatus{}, c.err
	}
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	// held says this probe holds the budget's unit of the kept connection,
	// for the connection it ends up with.
	held := conn != nil
	if conn != nil && time.Since(c.lastUsed) > c.idleFor {
		_ = conn.Close() // the app may have closed it by now
		conn = nil
	}
	c.mu.Unlock()
	defer func() {
		if held {
			c.budget.give()
		}
	}()
	deadline := time.Now().Add(timeout)
	reused := conn != nil
	if !reused {
		var err error
		if conn, err = c.dial(deadline); err != nil {
			return messages.AppStatus{}, err
		}
	}
	st, keep, answered, err := c.roundTrip(conn, deadline)
	if reused && !answered {
		// The app closed the kept connection while it sat idle; that says
		// nothing about the app, so try once more on a new one.
		_ = conn.Close()
		if conn, err = c.dial(deadline); err != nil {
			return messages.AppStatus{}, err
		}
		st, keep, _, err = c.roundTrip(conn, deadline)
	}
	if !keep || (!held && !c.budget.take()) {
		_ = conn.Close()
		return st, err
	}
	held = false // The kept connection holds it now.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = conn.Close()
		c.budget.give()
		return st, err
	}
	c.conn, c.lastUsed = conn, time.Now()
	return st, err
}

func (c *statusClient) dial(deadline time.Time) (net.Conn, error) {
	conn, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", c.uri, err)
	}
	if c.tls {
		tc := tls.Client(conn, &tls.Config{ServerName: hostOnly(c.host), MinVersion: tls.VersionTLS12})
		_ = tc.SetDeadline(deadline)
		if err := tc.Handshake(); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("GET %s: %w", c.uri, err)
		}
		conn = tc
	}
	return conn, nil
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// roundTrip sends one GET and reads the answer. keep says whether the
// connection can carry the next probe, answered whether a response came.
func (c *statusClient) roundTrip(conn net.Conn, deadline time.Time) (st messages.AppStatus, keep, answered bool, err error) {
	_ = conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, "GET "+c.uri+" HTTP/1.1\r\nHost: "+c.host+"\r\nAccept: application/json\r\n\r\n"); err != nil {
		return st, false, false, fmt.Errorf("GET %s: %w", c.uri, err)
	}
	// net/http's parser reads a header line of any length into memory: three
	// apps answering with an endless header line took the control plane from
	// 53 MB to 871 MB. Every byte read from the app comes out of a budget.
	lr := &budgetReader{r: conn, n: maxStatusHeaderBytes}
	br := readers.Get().(*bufio.Reader)
	br.Reset(lr)
	defer func() { br.Reset(nil); readers.Put(br) }()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		if lr.exhausted {
			return st, false, false, fmt.Errorf("GET %s: response header is over %d bytes", c.uri, maxStatusHeaderBytes)
		}
		return st, false, false, fmt.Errorf("GET %s: %w", c.uri, err)
	}
	// The body may hold MaxStatusBytes of JSON plus its chunk framing.
	lr.n += messages.MaxStatusBytes + maxStatusFramingBytes
	// The body is not closed on the failure paths: closing would read it to
	// its end, and the caller closes the connection instead.
	if resp.StatusCode != http.StatusOK {
		return st, false, true, fmt.Errorf("/status answered %s", resp.Status)
	}
	if st, err = messages.DecodeAppStatus(resp.Body); err != nil {
		if lr.exhausted {
			return st, false, true, fmt.Errorf("/status is over %d bytes", messages.MaxStatusBytes)
		}
		return st, false, true, err
	}
	// The connection is reused only after a clean, fully read answer.
	n, drainErr := io.Copy(io.Discard, io.LimitReader(resp.Body, 1))
	resp.Body.Close()
	return st, drainErr == nil && n == 0 && !resp.Close && br.Buffered() == 0, true, nil
}

// Bounds on what one probe reads from an app.
const (
	// maxStatusHeaderBytes bounds the status line and headers; a /status
	// answer needs a few hundred bytes of them.
	maxStatusHeaderBytes = 16 << 10
	// maxStatusFramingBytes allows for chunk sizes and trailers around the body.
	maxStatusFramingBytes = 4 << 10
)

// errBudget ends a response that is larger than the probe will read.
var errBudget = errors.New("response over the probe's size limit")

// budgetReader reads at most n more bytes, then fails with errBudget.
type budgetReader struct {
	r         io.Reader
	n         int64
	exhausted bool
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		b.exhausted = true
		return 0, errBudget
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

func (c *statusClient) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
		c.budget.give()
	}
}

// closeClients drops every kept connection, when the prober stops.
func (p *Prober) closeClients() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.targets {
		t.client.close()
		t.stopCrossing()
	}
}
