// Command benchupstream is the benchmarks' stand-in for session apps.
//
//	benchupstream app ADDR         a tiny JSON server with a WebSocket echo at /ws
//	                               and a body of exactly BigSize bytes at /big
//	benchupstream status N FIRST [IDLE_AT]
//	                               N /status servers on 127.77.x.y:20001, from
//	                               host number FIRST; busy, or idle from the Unix
//	                               time IDLE_AT (seconds, fractional)
//	benchupstream late DELAY       an app that listens on $HOST:$PORT only
//	                               DELAY (such as 200ms) after it starts, as
//	                               a slow app does, and serves /status
//
// It prints each address it serves, one a line, then "ready".
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// StatusPort is the port every status server listens on, each on its own
// loopback address, so that ten thousand of them use no ephemeral ports.
const StatusPort = 20001

// BigSize is the length of /big's body, the proxy benchmark's large
// response.
const BigSize = 1 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchupstream:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: benchupstream app ADDR | status N FIRST [IDLE_AT] | late DELAY")
	}
	switch args[0] {
	case "app":
		return serveApp(ctx, args[1])
	case "late":
		delay, err := time.ParseDuration(args[1])
		if err != nil {
			return fmt.Errorf("late: %w", err)
		}
		return serveLate(ctx, delay, net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT")))
	case "status":
		n, err := strconv.Atoi(args[1])
		if err != nil || len(args) < 3 {
			return fmt.Errorf("status: want N FIRST [IDLE_AT]")
		}
		first, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		var idleAt time.Time
		if len(args) > 3 {
			f, err := strconv.ParseFloat(args[3], 64)
			if err != nil {
				return err
			}
			sec, frac := math.Modf(f)
			idleAt = time.Unix(int64(sec), int64(frac*1e9))
		}
		return serveStatus(ctx, n, first, idleAt)
	default:
		return fmt.Errorf("unknown mode %q", args[0])
	}
}

func serveApp(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", echoWS)
	big := make([]byte, BigSize)
	for i := range big {
		big[i] = 'a' + byte(i%26)
	}
	bigLen := strconv.Itoa(len(big))
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		// With its length declared the body is sent as is, not chunked, as
		// a static file is.
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", bigLen)
		_, _ = w.Write(big)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"items":[1,2,3],"message":"hello from the session"}`)
	})
	fmt.Println(ln.Addr().String())
	fmt.Println("ready")
	return serve(ctx, ln, mux)
}

// serveLate is the spawn benchmark's app: it binds nothing until delay
// has passed since it started, so a readiness wait sees refused connects
// until then, and then answers /status at once.
func serveLate(ctx context.Context, delay time.Duration, addr string) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(delay):
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"active_connections":0,"seconds_inactive":0,"listening":true}`)
	}))
}

func echoWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	for {
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, msg); err != nil {
			return
		}
	}
}

// StatusHost is the loopback address of status server i.
func StatusHost(i int) string { return fmt.Sprintf("127.77.%d.%d", 1+i/250, 1+i%250) }

func serveStatus(ctx context.Context, n, first int, idleAt time.Time) error {
	busy, _ := json.Marshal(map[string]any{"active_connections": 1, "seconds_inactive": 0, "listening": true})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if idleAt.IsZero() {
			_, _ = w.Write(busy)
			return
		}
		// Whole seconds, as apps report them: the threshold is crossed
		// exactly at IDLE_AT plus the idle timeout.
		inactive := max(0, int64(time.Since(idleAt)/time.Second))
		fmt.Fprintf(w, `{"active_connections":0,"seconds_inactive":%d,"listening":true}`, inactive)
	})
	errs := make(chan error, n)
	for i := first; i < first+n; i++ {
		addr := net.JoinHostPort(StatusHost(i), strconv.Itoa(StatusPort))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		fmt.Println(addr)
		go func() { errs <- serve(ctx, ln, handler) }()
	}
	fmt.Println("ready")
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
