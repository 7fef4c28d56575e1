package provisioner_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/provisioner"
)

// freeAddr returns a loopback address nothing listens on, for now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// lateApp starts listening on addr after delay and serves /status saying
// listening; it counts the /status requests and records when it listened.
func lateApp(t *testing.T, addr string, delay time.Duration, listening bool) (requests *atomic.Int64, listenedAt chan time.Time) {
	t.Helper()
	requests, listenedAt = &atomic.Int64{}, make(chan time.Time, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if listening {
			_, _ = io.WriteString(w, `{"active_connections":0,"seconds_inactive":0,"listening":true}`)
		} else {
			_, _ = io.WriteString(w, `{"active_connections":0,"seconds_inactive":0,"listening":false}`)
		}
	})}
	t.Cleanup(func() { srv.Close() })
	go func() {
		time.Sleep(delay)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		listenedAt <- time.Now()
		_ = srv.Serve(ln)
	}()
	return requests, listenedAt
}

func TestAwaitReadySeesALateAppSoonWithOneStatusRequest(t *testing.T) {
	addr := freeAddr(t)
	requests, listenedAt := lateApp(t, addr, 200*time.Millisecond, true)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, err := provisioner.AwaitReady(ctx, provisioner.NewStatusChecker(), "http://"+addr+"/status", addr, make(chan struct{}))
	seen := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	late := seen.Sub(<-listenedAt)
	// The poll comes every 1.2 ms at 200 ms; the bound leaves room for a
	// loaded machine, and is still under the 50 ms the old backoff allowed.
	if late > 30*time.Millisecond {
		t.Errorf("the app was seen %s after it listened", late)
	}
	// Refused connects answer every poll before the app listens, so the
	// app sees one /status request, not hundreds.
	if n := requests.Load(); n != 1 {
		t.Errorf("the app got %d /status requests, want 1", n)
	}
}

func TestAwaitReadyWithoutStatusWaitsForAccept(t *testing.T) {
	addr := freeAddr(t)
	requests, _ := lateApp(t, addr, 50*time.Millisecond, false)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if _, err := provisioner.AwaitReady(ctx, provisioner.NewStatusChecker(), "", addr, make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("an app without /status got %d requests", n)
	}
}

func TestAwaitReadyTimesOutSayingWhy(t *testing.T) {
	addr := freeAddr(t)
	_, listening := lateApp(t, addr, 0, false)
	<-listening // The app answers, but says it is not listening yet.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := provisioner.AwaitReady(ctx, provisioner.NewStatusChecker(), "http://"+addr+"/status", addr, make(chan struct{}))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not listening") {
		t.Fatalf("AwaitReady = %v, want the deadline and that /status says not listening", err)
	}
}

func TestAwaitReadyStopsWhenTheAppExits(t *testing.T) {
	addr := freeAddr(t)
	exited := make(chan int, 1)
	time.AfterFunc(50*time.Millisecond, func() { exited <- 7 })
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	start := time.Now()
	code, err := provisioner.AwaitReady(ctx, provisioner.NewStatusChecker(), "http://"+addr+"/status", addr, exited)
	if !errors.Is(err, provisioner.ErrExited) || code != 7 {
		t.Fatalf("AwaitReady = %d, %v; want 7 and ErrExited", code, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the exit was noticed after %s", took)
	}
	if _, err := provisioner.AwaitReady(ctx, provisioner.NewStatusChecker(), "", "", exited); err == nil {
		t.Error("a wait with nothing to poll succeeded")
	}
}

func TestPollInterval(t *testing.T) {
	for _, c := range []struct{ elapsed, want time.Duration }{
		{0, time.Millisecond},
		{200 * time.Millisecond, 1400 * time.Microsecond},
		{time.Second, 3 * time.Millisecond},
		{2 * time.Second, 5 * time.Millisecond},
		{time.Minute, 5 * time.Millisecond},
	} {
		if got := provisioner.PollInterval(c.elapsed); got != c.want {
			t.Errorf("PollInterval(%s) = %s, want %s", c.elapsed, got, c.want)
		}
	}
}
