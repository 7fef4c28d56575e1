package demo

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

func (a *App) serveWS(w http.ResponseWriter, r *http.Request) {
	// Counted before Accept, while http.Server still tracks the request, so
	// Run cannot start waiting on conns between hijack and Add.
	a.conns.Add(1)
	defer a.conns.Done()

	// nil options keep the library's same-origin check: the proxy preserves
	// Host, so only pages served from this session may connect.
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		a.log.Debug("websocket rejected", "err", err, "origin", r.Header.Get("Origin"))
		return
	}
	defer func() { _ = conn.CloseNow() }()
	conn.SetReadLimit(maxMessage)

	c := newClient()
	defer c.cancel(nil)
	a.hub.join(c)
	// Leave only after the writer is gone, so active_connections never
	// reports zero while a goroutine of this connection is still alive.
	defer a.hub.leave(c)

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { a.writeLoop(conn, c) })

	err = a.readLoop(conn, c)
	switch {
	case err == nil:
	case websocket.CloseStatus(err) != -1, errors.Is(err, websocket.ErrMessageTooBig):
		// The library has already answered the peer's close, or sent its own.
	default:
		a.log.Debug("websocket read", "name", c.name, "err", err)
	}
	c.kick(websocket.StatusNormalClosure, "")
}

// readLoop applies the client's messages until the connection ends or the
// client breaks the protocol, in which case it has already been kicked.
func (a *App) readLoop(conn *websocket.Conn, c *client) error {
	for {
		// Background rather than c.ctx: cancelling a read's context makes
		// the library drop the TCP connection, which would cut off the close
		// frame the writer is about to send. Close unblocks this read.
		typ, data, err := conn.Read(context.Background())
		if err != nil {
			return err
		}
		if typ != websocket.MessageText {
			c.kick(websocket.StatusUnsupportedData, "text messages only")
			return nil
		}
		var m inbound
		if err := json.Unmarshal(data, &m); err != nil {
			c.kick(websocket.StatusUnsupportedData, "invalid JSON")
			return nil
		}
		switch m.Type {
		case "text":
			a.hub.edit(c, m.Text, m.Version)
		case "chat":
			a.hub.say(c, m.Text)
		default:
			// Unknown types are ignored so an older server tolerates a newer page.
		}
	}
}

// writeLoop owns every write to conn, pings so dead peers are noticed even
// when nobody types, and sends the close frame once the client is kicked.
func (a *App) writeLoop(conn *websocket.Conn, c *client) {
	ping := time.NewTicker(a.pingEvery)
	defer ping.Stop()
	for {
		// Checked first because select picks randomly among ready cases,
		// and a kicked client should not be sent its backlog.
		if c.ctx.Err() != nil {
			code, reason := c.closeReason()
			_ = conn.Close(code, reason)
			return
		}
		var err error
		select {
		case <-c.ctx.Done():
			continue
		case msg := <-c.send:
			// Not derived from c.ctx: a kick mid-write would otherwise drop
			// the connection instead of letting the close frame follow.
			ctx, cancel := context.WithTimeout(context.Background(), a.writeTimeout)
			err = conn.Write(ctx, websocket.MessageText, msg)
			cancel()
		case <-ping.C:
			ctx, cancel := context.WithTimeout(c.ctx, a.writeTimeout)
			err = conn.Ping(ctx)
			cancel()
		}
		if err != nil {
			if c.ctx.Err() != nil {
				continue // kicked while busy; the loop's top sends the close
			}
			a.log.Debug("websocket write", "name", c.name, "err", err)
			_ = conn.CloseNow()
			c.kick(websocket.StatusGoingAway, "write failed")
			return
		}
	}
}
