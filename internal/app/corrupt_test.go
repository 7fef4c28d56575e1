package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runAllInOne starts the all-in-one on dataDir, waits until it serves and
// until is true, then stops it, and returns its start error, if any.
func runAllInOne(t *testing.T, dataDir string, log *slog.Logger, until func() bool) error {
	t.Helper()
	cfg, err := LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Common.DataDir = dataDir
	cfg.Bus.Listen = ""
	cfg.Gateway.HTTPAddr = "127.0.0.1:0"
	m := NewMain(cfg, log)
	m.DemoCommand = "true"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, ModeAll) }()
	select {
	case <-m.Started():
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("spawner did not start within 30s")
	}
	for deadline := time.Now().Add(20 * time.Second); until != nil && !until(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("spawner did not get there within 20s")
		}
	}
	cancel()
	return <-done
}

// TestCorruptReaperConsumerIsRecreated writes 64 random bytes into the
// reaper consumer's state file on disk, as the attack did, and checks that
// Spawner still starts, with a warning, and again after that.
func TestCorruptReaperConsumerIsRecreated(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "SPAWNER_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	dir := t.TempDir()
	// The server writes o.dat once the consumer has state to keep, so with
	// no heartbeats yet it may not exist: the junk then takes its place.
	var consumer []string
	if err := runAllInOne(t, dir, slog.New(slog.DiscardHandler), func() bool {
		consumer, _ = filepath.Glob(filepath.Join(dir, "nats", "jetstream", "jetstream", "*", "streams", "spawner_heartbeats", "obs", "reaper", "meta.inf"))
		return len(consumer) == 1
	}); err != nil {
		t.Fatalf("first start: %v", err)
	}
	junk := make([]byte, 64)
	_, _ = rand.Read(junk)
	if err := os.WriteFile(filepath.Join(filepath.Dir(consumer[0]), "o.dat"), junk, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	if err := runAllInOne(t, dir, slog.New(slog.NewTextHandler(&logs, nil)), nil); err != nil {
		t.Fatalf("restart after corrupting the consumer: %v", err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "consumer=reaper") {
		t.Errorf("no warning about the recreated consumer:\n%s", logs.String())
	}
	if err := runAllInOne(t, dir, slog.New(slog.DiscardHandler), nil); err != nil {
		t.Fatalf("third start: %v", err)
	}
}
