package kube

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// realClientBackend talks HTTP to host, as it would to an API server.
func realClientBackend(t *testing.T, host string) *Backend {
	t.Helper()
	cfg := baseConfig()
	cfg.APITimeout = 2 * time.Second
	b, err := NewWithConfig(cfg, &rest.Config{Host: host}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestUnreachableAPIServerIsUnavailable(t *testing.T) {
	b := realClientBackend(t, "http://"+closedPort(t))
	id := messages.NewSessionID()
	_, err := b.Start(t.Context(), provisioner.Spec{SessionID: id})
	var me *messages.Error
	if !errors.As(err, &me) || me.Code != messages.CodeUnavailable {
		t.Fatalf("Start error %v, want code %s", err, messages.CodeUnavailable)
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %q does not say why", err)
	}
	// Nothing reached the cluster, so the rollback's Stop has nothing to
	// do and needs no API server.
	if err := b.Stop(t.Context(), id); err != nil {
		t.Errorf("Stop after a refused create: %v", err)
	}
	// Any other stop does need the API server, and says so.
	err = b.Stop(t.Context(), messages.NewSessionID())
	if !errors.As(err, &me) || me.Code != messages.CodeUnavailable {
		t.Errorf("Stop error %v, want code %s", err, messages.CodeUnavailable)
	}
}

// apiStub answers every request with code and a Status body, counting them.
func apiStub(t *testing.T, code int) (string, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"stub says %d","code":%d}`, code, code)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &calls
}

func TestOverloadedAPIServerIsRetriedThenUnavailable(t *testing.T) {
	url, calls := apiStub(t, http.StatusServiceUnavailable)
	b := realClientBackend(t, url)
	_, err := b.Start(t.Context(), provisioner.Spec{SessionID: messages.NewSessionID()})
	var me *messages.Error
	if !errors.As(err, &me) || me.Code != messages.CodeUnavailable {
		t.Fatalf("Start error %v, want code %s", err, messages.CodeUnavailable)
	}
	if calls.Load() < 2 {
		t.Errorf("%d requests: a 503 was not retried", calls.Load())
	}
}

func TestRejectedCreateIsNotRetriedNorUnavailable(t *testing.T) {
	url, calls := apiStub(t, http.StatusForbidden)
	b := realClientBackend(t, url)
	_, err := b.Start(t.Context(), provisioner.Spec{SessionID: messages.NewSessionID()})
	var me *messages.Error
	if err == nil || errors.As(err, &me) {
		t.Fatalf("Start error %v, want a plain failure", err)
	}
	if !strings.Contains(err.Error(), "stub says 403") {
		t.Errorf("error %q lost the API server's message", err)
	}
	if calls.Load() != 1 {
		t.Errorf("%d requests for a forbidden create, want 1", calls.Load())
	}
}

func TestNewReadsKubeconfig(t *testing.T) {
	url := "https://" + closedPort(t)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	doc := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "` + url + `"}}]
users: [{name: u, user: {token: secret}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig()
	cfg.Kubeconfig, cfg.QPS = path, 100
	rc, err := restConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != url || rc.BearerToken != "secret" || rc.QPS != cfg.QPS || rc.Timeout != 0 {
		t.Errorf("rest config host %s token %q qps %v timeout %s", rc.Host, rc.BearerToken, rc.QPS, rc.Timeout)
	}
	if _, err := New(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("New: %v", err)
	}
	cfg.Kubeconfig = filepath.Join(t.TempDir(), "missing")
	if _, err := New(cfg, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("New accepted a missing kubeconfig")
	}
}
