package sidecar

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

func TestNewValidates(t *testing.T) {
	bad := []Config{
		{AppPort: 0},
		{AppPort: -5},
		{AppPort: 65536},
		{AppPort: 8080, ListenAddr: ":8080"},
		{AppPort: 8080, ListenAddr: "127.0.0.1:8080"},
		{AppPort: 8080, ListenAddr: "no-port"},
	}
	for _, cfg := range bad {
		if _, err := New(cfg, nil, nil); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	s, err := New(Config{AppPort: 8080}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.addr != DefaultListenAddr || s.Watcher().Port() != 8080 {
		t.Errorf("defaults: addr %q port %d", s.addr, s.Watcher().Port())
	}
	if s.server.ReadHeaderTimeout <= 0 || s.server.ReadTimeout <= 0 || s.server.WriteTimeout <= 0 || s.server.IdleTimeout <= 0 {
		t.Errorf("server timeouts not set: %+v", s.server)
	}
}

func TestConfigTags(t *testing.T) {
	typ := reflect.TypeFor[Config]()
	for field, want := range map[string]map[string]string{
		"AppPort":    {"envconfig": "APP_PORT", "required": "true", "default": ""},
		"ListenAddr": {"envconfig": "SIDECAR_ADDR", "default": ":7070", "required": ""},
	} {
		f, _ := typ.FieldByName(field)
		for key, value := range want {
			if got := f.Tag.Get(key); got != value {
				t.Errorf("%s tag %s:%q, want %q", field, key, got, value)
			}
		}
	}
	if DefaultListenAddr != ":7070" {
		t.Errorf("DefaultListenAddr %q disagrees with the tag", DefaultListenAddr)
	}
}

// TestSidecarServe runs the whole component against a real app listener and
// shows that polling the sidecar, even over keep-alive, is not app activity.
func TestSidecarServe(t *testing.T) {
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	appPort := app.Addr().(*net.TCPAddr).Port

	s, err := New(Config{AppPort: appPort, ListenAddr: "127.0.0.1:0"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	url := "http://" + ln.Addr().String() + "/status"
	for i := range 3 {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		var st messages.AppStatus
		err = json.NewDecoder(res.Body).Decode(&st)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st.ActiveConnections != 0 || !st.Listening {
			t.Errorf("poll %d: %+v; the sidecar's own connection must not count", i, st)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := http.Get(url); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestSidecarRun(t *testing.T) {
	// Find a free port, then let Run bind it by address.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()

	s, err := New(Config{AppPort: 1, ListenAddr: addr}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("healthz %d", res.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run never served: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}

	// A port already in use is reported, not swallowed.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, err = New(Config{AppPort: 1, ListenAddr: "127.0.0.1:" + strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("Run on a busy port returned nil")
	}
}
