package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// sessionActivity is what this gateway sees of one session's traffic, for
// the proxy status source. Every field is atomic: the proxy touches it per
// request and per chunk, and the publisher reads it once an interval.
type sessionActivity struct {
	inFlight atomic.Int32
	upgraded atomic.Int32
	// last is when a byte last went either way, in Unix nanoseconds.
	last atomic.Int64
	// seen is set by any traffic and cleared by the publisher, so that a
	// session idle for a whole interval costs no message.
	seen atomic.Bool
}

func (a *sessionActivity) touch() {
	a.last.Store(time.Now().UnixNano())
	a.seen.Store(true)
}

// begin counts a request, or an upgraded connection, until the returned
// function runs.
func (a *sessionActivity) begin(upgrade bool) func() {
	n := &a.inFlight
	if upgrade {
		n = &a.upgraded
	}
	n.Add(1)
	a.touch()
	return func() {
		n.Add(-1)
		a.touch()
	}
}

// snapshot reports the session if it was used during the interval or
// still has something open, and starts the next interval.
func (a *sessionActivity) snapshot(id string) (messages.SessionActivity, bool) {
	seen := a.seen.Swap(false)
	in, up := int(a.inFlight.Load()), int(a.upgraded.Load())
	if !seen && in == 0 && up == 0 {
		return messages.SessionActivity{}, false
	}
	return messages.SessionActivity{SessionID: id, InFlight: in, Upgraded: up,
		LastActive: time.Unix(0, a.last.Load()).UTC()}, true
}

// publishActivity sends, once per probe interval, what the proxy saw of
// the sessions that use the proxy status source. Sessions with no traffic
// and nothing open in the interval are left out, so at 10,000 sessions the
// cost follows the active ones: at most one entry per active session per
// interval, batched MaxActivityEntries to a message.
func (g *Gateway) publishActivity(ctx context.Context) {
	if g.cfg.ProbeInterval <= 0 {
		return
	}
	t := time.NewTicker(g.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		batch := messages.Activity{Gateway: g.name, Time: time.Now().UTC()}
		flush := func() {
			if len(batch.Sessions) == 0 {
				return
			}
			data, _ := json.Marshal(batch)
			if err := g.nc.Publish(g.subj.Activity(), data); err != nil {
				g.log.Warn("publish activity", "err", err)
			}
			batch.Sessions = batch.Sessions[:0]
		}
		g.routes.eachActivity(func(id string, a *sessionActivity) {
			if s, ok := a.snapshot(id); ok {
				batch.Sessions = append(batch.Sessions, s)
				if len(batch.Sessions) == messages.MaxActivityEntries {
					flush()
				}
			}
		})
		flush()
	}
}

// activityWriter marks a session active whenever bytes reach the browser,
// and wraps the connection the reverse proxy hijacks for an upgrade, so a
// WebSocket's traffic counts in both directions.
type activityWriter struct {
	http.ResponseWriter
	act *sessionActivity
}

func (w *activityWriter) Write(b []byte) (int, error) {
	w.act.touch()
	return w.ResponseWriter.Write(b)
}

func (w *activityWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *activityWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &activityConn{Conn: conn, act: w.act}, brw, nil
}

type activityConn struct {
	net.Conn
	act *sessionActivity
}

func (c *activityConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.act.touch()
	}
	return n, err
}

func (c *activityConn) Write(b []byte) (int, error) {
	c.act.touch()
	return c.Conn.Write(b)
}

// activityBody marks the session active as a request body is read.
type activityBody struct {
	io.ReadCloser
	act *sessionActivity
}

func (b *activityBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.act.touch()
	}
	return n, err
}
