package app

import (
	"context"
	"log/slog"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestRunLeavesConfigAlone runs the all-in-one and checks that the Config
// the caller gave is what it holds afterwards: Run fills in URLs,
// collectors and signers on its own copy.
func TestRunLeavesConfigAlone(t *testing.T) {
	cfg, err := LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Common.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Bus.Listen = "127.0.0.1:-1"
	cfg.Gateway.HTTPAddr = "127.0.0.1:0"
	cfg.Common.SessionAuth = "token"
	want := cfg
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	m.DemoCommand = "true"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, ModeAll) }()
	select {
	case <-m.Started():
	case err := <-done:
		t.Fatalf("Run ended at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not started within 30s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Config, want) {
		t.Errorf("Run changed m.Config:\n%+v\nwant\n%+v", m.Config, want)
	}
}
