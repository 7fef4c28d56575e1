package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gateway "github.com/spawnerhq/spawner/api-gateway"
	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// newGateway serves a real gateway on a real NATS; no provisioner runs,
// so sessions are written to the registry directly.
func newGateway(t *testing.T) (*Client, *registry.Registry, *bustest.Env) {
	t.Helper()
	env := bustest.Run(t)
	reg := registry.New(env.KV)
	cfg := settings.Defaults[gateway.Config]()
	cfg.SpawnTimeout = time.Second
	gw, err := gateway.New(cfg, gateway.Deps{NATS: env.Conn, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	c, err := New(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	return c, reg, env
}

func TestListAndGetShowTheRegistry(t *testing.T) {
	c, reg, _ := newGateway(t)
	ctx := t.Context()
	if list, err := c.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("empty list: %v %v", list, err)
	}
	id := messages.NewSessionID()
	created := time.Now().UTC().Truncate(time.Second)
	if _, err := reg.Create(ctx, messages.Session{ID: id, Key: "alice", Status: messages.StatusReady, URL: "http://h/p/" + id + "/",
		Backend: "process", CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	list, err := c.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != id || list[0].Key != "alice" || !list[0].CreatedAt.Equal(created) {
		t.Fatalf("List = %+v, %v", list, err)
	}
	s, err := c.Get(ctx, id)
	if err != nil || s.ID != id || s.Status != messages.StatusReady {
		t.Fatalf("Get = %+v, %v", s, err)
	}
	_, err = c.Get(ctx, messages.NewSessionID())
	if !IsNotFound(err) {
		t.Fatalf("Get of an unknown session: %v, want not found", err)
	}
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != messages.CodeNotFound || apiErr.Message == "" {
		t.Errorf("error = %#v, want the API's code and message", err)
	}
	if _, err := c.Get(ctx, "../../etc"); err == nil || IsNotFound(err) {
		t.Errorf("Get of a malformed id: %v, want a local error", err)
	}
}

func TestInitAndDeleteReportTheAPIsErrors(t *testing.T) {
	c, _, _ := newGateway(t)
	_, err := c.Init(t.Context(), messages.SpawnRequest{})
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable || apiErr.Code != messages.CodeUnavailable {
		t.Fatalf("Init with no provisioner: %v, want 503 unavailable", err)
	}
	_, err = c.Init(t.Context(), messages.SpawnRequest{Env: map[string]string{"PORT": "1"}})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Message, "PORT") {
		t.Fatalf("Init with a reserved variable: %v, want 400 naming it", err)
	}
	if err := c.Delete(t.Context(), messages.NewSessionID()); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("Delete with no provisioner: %v, want 503", err)
	}
}

func TestSpawnNATSWithoutAProvisioner(t *testing.T) {
	_, _, env := newGateway(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := SpawnNATS(ctx, env.Conn, "spawner", messages.SpawnRequest{})
	var e *messages.Error
	if !errors.As(err, &e) || e.Code != messages.CodeUnavailable {
		t.Fatalf("SpawnNATS = %v, want unavailable", err)
	}
	if _, err := SpawnNATS(ctx, env.Conn, "bad prefix!", messages.SpawnRequest{}); err == nil {
		t.Error("SpawnNATS accepted an invalid prefix")
	}
	if _, err := SpawnNATS(ctx, env.Conn, "spawner", messages.SpawnRequest{IdleTimeoutSeconds: -1}); !errors.As(err, &e) || e.Code != messages.CodeBadRequest {
		t.Errorf("SpawnNATS with a bad request: %v, want bad_request before sending", err)
	}
}

func TestTokenAndForeignErrors(t *testing.T) {
	// A proxy in front of Spawner may answer on its own, in its own format.
	var gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer srv.Close()
	c, err := New(srv.URL, WithToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(t.Context())
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway || !strings.Contains(apiErr.Message, "bad gateway") {
		t.Fatalf("List through a failing proxy: %v", err)
	}
	if gotAuth != "Bearer s3cret" {
		t.Errorf("Authorization = %q, want the Bearer token", gotAuth)
	}
	for _, bad := range []string{"", "localhost:8080", "ftp://x", "http://"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

func TestEventsErrorsComeFromEvents(t *testing.T) {
	c, _, _ := newGateway(t)
	_, err := c.Events(t.Context(), EventsOptions{SessionID: messages.NewSessionID()})
	if !IsNotFound(err) {
		t.Fatalf("Events of an unknown session: %v, want not found", err)
	}
	s, err := c.Events(t.Context(), EventsOptions{NoReplay: true, UntilLive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(); !errors.Is(err, io.EOF) || !s.Live() {
		t.Fatalf("Next with UntilLive on an empty stream: %v live=%v, want EOF once live", err, s.Live())
	}
}
