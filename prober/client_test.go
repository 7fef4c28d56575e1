package prober

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/settings"
)

func statusServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func TestStatusClientKeepsOneConnection(t *testing.T) {
	srv, conns := statusServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RequestURI() != "/s/1/status?x=1" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, `{"active_connections":2,"seconds_inactive":7,"listening":true}`)
	})
	c := newStatusClient(srv.URL+"/s/1/status?x=1", Config{Probing: settings.Probing{ProbeInterval: time.Second}}, nil)
	defer c.close()
	for range 5 {
		st, err := c.fetch(2 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if st.ActiveConnections != 2 || st.SecondsInactive != 7 || !st.Listening {
			t.Fatalf("status %+v", st)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("5 probes opened %d connections, want 1", n)
	}
}

// An app may close a kept connection while it sits idle; the next probe
// must not report the app as failing because of that.
func TestStatusClientRedialsAClosedConnection(t *testing.T) {
	srv, conns := statusServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"active_connections":0,"seconds_inactive":1,"listening":true}`)
	})
	c := newStatusClient(srv.URL+"/status", Config{Probing: settings.Probing{ProbeInterval: time.Second}}, nil)
	defer c.close()
	if _, err := c.fetch(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	if _, err := c.fetch(2 * time.Second); err != nil {
		t.Fatalf("probe after the app closed the idle connection: %v", err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestStatusClientErrors(t *testing.T) {
	srv, _ := statusServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/down":
			http.Error(w, "no", http.StatusServiceUnavailable)
		case "/garbage":
			_, _ = io.WriteString(w, "not json")
		case "/huge":
			_, _ = io.WriteString(w, `{"x":"`+strings.Repeat("a", 100<<10)+`"}`)
		}
	})
	cases := map[string]string{
		srv.URL + "/down":     "503",
		srv.URL + "/garbage":  "not the expected JSON",
		srv.URL + "/huge":     "over",
		"ftp://x/status":      "not an http(s) URL",
		"http://127.0.0.1:1/": "connect",
	}
	for url, want := range cases {
		c := newStatusClient(url, Config{Probing: settings.Probing{ProbeInterval: time.Second}}, nil)
		_, err := c.fetch(2 * time.Second)
		c.close()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one mentioning %q", url, err, want)
		}
	}
}

// A target that never answers costs the probe its timeout, no more.
func TestStatusClientTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c := newStatusClient("http://"+ln.Addr().String()+"/status", Config{Probing: settings.Probing{ProbeInterval: time.Second}}, nil)
	start := time.Now()
	_, err = c.fetch(200 * time.Millisecond)
	if err == nil {
		t.Fatal("a silent app answered")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the probe took %s with a 200ms timeout", took)
	}
}
