package lean

import (
	"context"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDemoServesStatusOnPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	t.Setenv("PORT", strconv.Itoa(port))
	t.Setenv("HOST", "127.0.0.1")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Demo(ctx) }()
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/status"
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("/status answered %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo never answered %s: %v", url, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("demo ended with %v", err)
	}
}

func TestSidecarNeedsTheAppPort(t *testing.T) {
	t.Setenv("SPAWNER_APP_PORT", "")
	if err := Sidecar(t.Context()); err == nil || !strings.Contains(err.Error(), "APP_PORT") {
		t.Errorf("sidecar without SPAWNER_APP_PORT: %v", err)
	}
}

// TestSpawnerDemoStaysLean fails when the lean binary's imports reach a
// backend's client or the NATS server, whose package init it exists to
// avoid.
func TestSpawnerDemoStaysLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../../cmd/spawner-demo").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, heavy := range []string{"k8s.io/", "github.com/docker/", "github.com/nats-io/", "github.com/spawnerhq/spawner/internal/app"} {
		for _, pkg := range strings.Fields(string(out)) {
			if strings.HasPrefix(pkg, heavy) {
				t.Errorf("spawner-demo imports %s", pkg)
				break
			}
		}
	}
}
