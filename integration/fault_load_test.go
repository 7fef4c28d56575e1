package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/messages"
)

// The client-side bounds of each kind of request. Each is the server's own
// bound plus slack: the gateway answers /init within the spawn timeout plus
// 5s and DELETE within 30s, so a request that outlives its bound hangs.
const (
	faultInitTimeout   = 25 * time.Second
	faultDeleteTimeout = 40 * time.Second
	faultGetTimeout    = 20 * time.Second
	faultWSTimeout     = 10 * time.Second
	faultNATSTimeout   = 25 * time.Second
)

// faultSession is a session some client was handed: an /init or NATS reply
// with a session id.
type faultSession struct {
	ID  string
	URL string
	Via string
}

// faultChurn is the load: workers that spawn, use and end sessions, counting
// every answer they get.
type faultChurn struct {
	// bases are the gateways; each cycle spawns through one and deletes
	// through the next.
	bases []string
	nc    *nats.Conn
	subj  messages.Subjects
	init  *http.Client
	del   *http.Client
	get   *http.Client
	seq   atomic.Int64

	mu             sync.Mutex
	sessions       map[string]faultSession
	acceptedBy     map[string]int
	status         map[string]int
	fiveXX         map[string]int
	timeouts       int
	connErrors     int
	natsNoReply    int
	natsErrors     map[string]int
	wsOK, wsFailed int
	wsTimeouts     int
	slowest        map[string]time.Duration
	slow           []string
	start          time.Time
}

func newFaultChurn(bases []string, nc *nats.Conn) *faultChurn {
	transport := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second}
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	return &faultChurn{
		bases: bases, nc: nc, subj: subj,
		init:       &http.Client{Timeout: faultInitTimeout, Transport: transport},
		del:        &http.Client{Timeout: faultDeleteTimeout, Transport: transport},
		get:        &http.Client{Timeout: faultGetTimeout, Transport: transport},
		sessions:   map[string]faultSession{},
		acceptedBy: map[string]int{}, status: map[string]int{}, fiveXX: map[string]int{},
		natsErrors: map[string]int{}, slowest: map[string]time.Duration{}, start: time.Now(),
	}
}

// timed records how long an operation took, keeps the slowest of each
// kind, and notes the ones slow enough to explain in the report.
func (c *faultChurn) timed(label string, began time.Time, outcome string) {
	took := time.Since(began)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slowest[label] = max(c.slowest[label], took)
	if took > 5*time.Second {
		c.slow = append(c.slow, fmt.Sprintf("%5.1fs %s took %.1fs: %s",
			began.Sub(c.start).Seconds(), label, took.Seconds(), outcome))
	}
}

// run keeps one worker going until ctx ends; the cycle in progress is
// finished, not cut, so its requests are judged by their own timeouts.
func (c *faultChurn) run(ctx context.Context, pause time.Duration) {
	for ctx.Err() == nil {
		n := c.seq.Add(1)
		base, other := c.bases[int(n)%len(c.bases)], c.bases[int(n+1)%len(c.bases)]
		var s faultSession
		var ok bool
		switch n % 5 {
		case 0, 3:
			s, ok = c.spawnHTTP(base, fmt.Sprintf(`{"key":"doc-%d"}`, n%7), "http-key")
		case 1:
			s, ok = c.spawnNATS(n)
		default:
			s, ok = c.spawnHTTP(base, `{"labels":{"suite":"fault"}}`, "http")
		}
		if ok {
			c.use(s)
			if n%2 == 0 {
				c.delete(other, s)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

func (c *faultChurn) spawnHTTP(base, body, via string) (faultSession, bool) {
	req, _ := http.NewRequest(http.MethodPost, base+"/init", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	code, data := c.do(c.init, "POST /init", req)
	if code != http.StatusCreated && code != http.StatusOK {
		return faultSession{}, false
	}
	var rep messages.SpawnReply
	if json.Unmarshal(data, &rep) != nil || rep.SessionID == "" {
		return faultSession{}, false
	}
	if !rep.Created {
		via += "-existing"
	}
	return c.accept(faultSession{ID: rep.SessionID, URL: rep.URL, Via: via}), true
}

func (c *faultChurn) spawnNATS(n int64) (faultSession, bool) {
	data, _ := json.Marshal(messages.SpawnRequest{RequestID: "fault-" + strconv.FormatInt(n, 10)})
	began := time.Now()
	msg, err := c.nc.Request(c.subj.Requested(), data, faultNATSTimeout)
	outcome := "reply"
	if err != nil {
		outcome = err.Error()
	}
	c.timed("NATS spawn", began, outcome)
	if err != nil {
		c.mu.Lock()
		if errors.Is(err, nats.ErrTimeout) {
			c.natsNoReply++
		} else {
			c.natsErrors[faultErrKind(err)]++
		}
		c.mu.Unlock()
		return faultSession{}, false
	}
	var rep messages.SpawnReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.Error != nil || rep.SessionID == "" {
		c.mu.Lock()
		if rep.Error != nil {
			c.natsErrors[string(rep.Error.Code)]++
		} else {
			c.natsErrors["undecodable"]++
		}
		c.mu.Unlock()
		return faultSession{}, false
	}
	return c.accept(faultSession{ID: rep.SessionID, URL: rep.URL, Via: "nats"}), true
}

func (c *faultChurn) accept(s faultSession) faultSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acceptedBy[s.Via]++
	if _, ok := c.sessions[s.ID]; !ok {
		c.sessions[s.ID] = s
	}
	return s
}

// use does what a browser does: load the page through the proxy, then
// send one edit over the demo's WebSocket and wait for its ack.
func (c *faultChurn) use(s faultSession) {
	req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	if code, _ := c.do(c.get, "GET /p/", req); code != http.StatusOK {
		return
	}
	began := time.Now()
	err := c.webSocket(s)
	outcome := "ack"
	if err != nil {
		outcome = err.Error()
	}
	c.timed("WebSocket", began, outcome)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		c.wsOK++
	case errors.Is(err, context.DeadlineExceeded):
		c.wsTimeouts++
	default:
		c.wsFailed++
	}
}

func (c *faultChurn) webSocket(s faultSession) error {
	ctx, cancel := context.WithTimeout(context.Background(), faultWSTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"ws", nil)
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"text","text":"faultChurn","version":0}`)); err != nil {
		return err
	}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(`"type":"ack"`)) {
			return conn.Close(websocket.StatusNormalClosure, "")
		}
	}
}

func (c *faultChurn) delete(base string, s faultSession) {
	req, _ := http.NewRequest(http.MethodDelete, base+"/sessions/"+s.ID, nil)
	c.do(c.del, "DELETE /sessions", req)
}

// do sends a request and counts the outcome: a status, a timeout (the
// request hung past its bound), or a connection error (the gateway was
// down or went down mid-request).
func (c *faultChurn) do(client *http.Client, label string, req *http.Request) (int, []byte) {
	began := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		c.timed(label, began, err.Error())
		c.mu.Lock()
		defer c.mu.Unlock()
		var uerr *url.Error
		if errors.As(err, &uerr) && uerr.Timeout() {
			c.timeouts++
		} else {
			c.connErrors++
		}
		return 0, nil
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	c.timed(label, began, resp.Status+" "+string(bytes.TrimSpace(data[:min(len(data), 200)])))
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) && uerr.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			c.timeouts++
		} else {
			c.connErrors++
		}
		return 0, nil
	}
	c.status[label+" "+strconv.Itoa(resp.StatusCode)]++
	if resp.StatusCode >= 500 {
		c.fiveXX[strconv.Itoa(resp.StatusCode)]++
	}
	return resp.StatusCode, data
}

// accepted returns every session a client was handed.
func (c *faultChurn) accepted() []faultSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]faultSession, 0, len(c.sessions))
	for _, s := range c.sessions {
		out = append(out, s)
	}
	return out
}

// fill copies the counters into the report.
func (c *faultChurn) fill(r *faultReport) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.SessionsAccepted = len(c.sessions)
	r.AcceptedBy = faultCopy(c.acceptedBy)
	r.HTTPStatus = faultCopy(c.status)
	r.HTTP5xx = faultCopy(c.fiveXX)
	r.HTTPTimeouts, r.HTTPConnErrors = c.timeouts, c.connErrors
	r.NATSSpawnNoReply, r.NATSSpawnErrors = c.natsNoReply, faultCopy(c.natsErrors)
	r.WebSocketOK, r.WebSocketFailed, r.WebSocketTimeouts = c.wsOK, c.wsFailed, c.wsTimeouts
	r.SlowestSeconds = map[string]float64{}
	for label, d := range c.slowest {
		r.SlowestSeconds[label] = d.Round(time.Millisecond).Seconds()
	}
	r.SlowOperations = append([]string(nil), c.slow...)
}

func faultCopy(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func faultErrKind(err error) string {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return "no_responders"
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting):
		return "disconnected"
	default:
		return "other"
	}
}
