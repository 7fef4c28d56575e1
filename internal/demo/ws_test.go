package demo

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestOversizeMessageClosesOnlyThatConnection(t *testing.T) {
	app, srv, _ := start(t)
	bystander := dial(t, wsURL(t, srv.URL)+"/ws")
	next(t, bystander, presence(1))
	big := dial(t, wsURL(t, srv.URL)+"/ws")
	next(t, big, presence(2))

	huge := strings.Repeat("x", maxMessage+1)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	// The write itself may fail once the server hangs up mid-message.
	_ = big.Write(ctx, websocket.MessageText, []byte(`{"type":"text","text":"`+huge+`","version":0}`))
	for {
		_, _, err := big.Read(ctx)
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
			t.Fatalf("close status = %v (err %v), want %v", got, err, websocket.StatusMessageTooBig)
		}
		break
	}

	next(t, bystander, presence(1))
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz after oversize message: %v %v", resp, err)
	}
	resp.Body.Close()
	// The oversize edit must not have been applied.
	send(t, bystander, map[string]any{"type": "text", "text": "small", "version": 0})
	if ack := next(t, bystander, func(m wire) bool { return m.Type == "ack" }); ack.Version != 1 {
		t.Fatalf("ack = %+v, want version 1", ack)
	}
	_ = bystander.Close(websocket.StatusNormalClosure, "")
	waitHandlers(t, app)
}

func TestProtocolViolationsClose(t *testing.T) {
	_, srv, _ := start(t)
	for _, tc := range []struct {
		name string
		typ  websocket.MessageType
		data string
	}{
		{"invalid JSON", websocket.MessageText, "not json"},
		{"binary", websocket.MessageBinary, `{"type":"text"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dial(t, wsURL(t, srv.URL)+"/ws")
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			if err := conn.Write(ctx, tc.typ, []byte(tc.data)); err != nil {
				t.Fatal(err)
			}
			for {
				_, _, err := conn.Read(ctx)
				if err == nil {
					continue
				}
				if got := websocket.CloseStatus(err); got != websocket.StatusUnsupportedData {
					t.Fatalf("close status = %v (err %v)", got, err)
				}
				return
			}
		})
	}
}

func TestCrossOriginRejected(t *testing.T) {
	_, srv, _ := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	h := http.Header{"Origin": {"https://evil.example"}}
	conn, resp, err := websocket.Dial(ctx, wsURL(t, srv.URL)+"/ws", &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		_ = conn.CloseNow()
		t.Fatal("cross-origin WebSocket was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin dial: resp %v err %v, want 403", resp, err)
	}
	// Same host under another scheme is still the same site as far as the
	// proxy is concerned, so it must be let in.
	u, _ := url.Parse(srv.URL)
	h = http.Header{"Origin": {"https://" + u.Host}}
	conn, _, err = websocket.Dial(ctx, wsURL(t, srv.URL)+"/ws", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("same-host origin rejected: %v", err)
	}
	_ = conn.CloseNow()
}

func TestDeadPeerIsDropped(t *testing.T) {
	clock := newFakeClock()
	app := New(Config{}, clock.Now, testLogger(t))
	app.pingEvery = 20 * time.Millisecond
	app.writeTimeout = 100 * time.Millisecond
	srv := serve(t, app, app.Handler())

	// This client never reads, so it never answers pings, like a peer
	// whose network vanished without a FIN.
	dial(t, wsURL(t, srv.URL)+"/ws")
	// Polling /status for 1 could miss the short window before the drop,
	// so check the hub saw the client join at all.
	eventually(t, "the client to join", func() bool {
		app.hub.mu.Lock()
		defer app.hub.mu.Unlock()
		return app.hub.guests == 1
	})
	eventually(t, "the silent peer to be dropped", func() bool { return getStatus(t, srv.URL).ActiveConnections == 0 })
	waitHandlers(t, app)
}

func TestRunServesAndShutsDown(t *testing.T) {
	app := New(Config{Host: "127.0.0.1", Port: 0}, nil, testLogger(t))
	addrc := make(chan net.Addr, 1)
	app.onListen = func(a net.Addr) { addrc <- a }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- app.Run(ctx) }()

	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatalf("Run: %v", err)
	case <-time.After(patience):
		t.Fatal("Run never listened")
	}
	base := "http://" + addr.String()
	resp, err := http.Get(base + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	conn := dial(t, wsURL(t, base)+"/ws")
	next(t, conn, presence(1))
	// Keep reading so the close handshake can complete, as a browser would.
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.Read(context.Background()); err != nil {
				closed <- err
				return
			}
		}
	}()

	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run returned %v on clean shutdown", err)
		}
	case <-time.After(patience):
		t.Fatal("Run did not return after cancel")
	}
	if d := time.Since(start); d >= shutdownGrace {
		t.Fatalf("shutdown took %v; open WebSockets were not closed promptly", d)
	}
	select {
	case err := <-closed:
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Fatalf("client saw %v (err %v), want going away", got, err)
		}
	case <-time.After(patience):
		t.Fatal("client connection still open after shutdown")
	}
}

func TestRunReportsListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	err = New(Config{Host: "127.0.0.1", Port: port}, nil, nil).Run(context.Background())
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Fatalf("Run on a taken port = %v, want a listen error", err)
	}
}
