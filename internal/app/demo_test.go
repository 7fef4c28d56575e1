package app

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spawnerhq/spawner/internal/lean"
)

func TestDefaultDemoCommandPrefersTheLeanBinaryBesideSpawner(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "spawner")
	if got, want := DefaultDemoCommand(exe), "'"+exe+"' demo"; got != want {
		t.Errorf("without spawner-demo: %q, want %q", got, want)
	}
	lean := filepath.Join(dir, DemoBinary)
	if err := os.WriteFile(lean, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := DefaultDemoCommand(exe); got != "'"+exe+"' demo" {
		t.Errorf("with a spawner-demo that is not executable: %q", got)
	}
	if err := os.Chmod(lean, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, want := DefaultDemoCommand(exe), "'"+lean+"'"; got != want {
		t.Errorf("with spawner-demo beside: %q, want %q", got, want)
	}
}

func TestLeanModesReadTheSamePrefix(t *testing.T) {
	if lean.EnvPrefix != EnvPrefix {
		t.Errorf("lean.EnvPrefix %q, app.EnvPrefix %q", lean.EnvPrefix, EnvPrefix)
	}
}
