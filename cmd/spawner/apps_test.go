package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/messages"
)

func TestAppsVerbsAgainstACatalog(t *testing.T) {
	demo := "'" + os.Args[0] + "' demo"
	path := filepath.Join(t.TempDir(), "apps.yaml")
	catalog := "default: demo\napps:\n  demo:\n    description: The collaborative note\n    command: exec " + demo +
		"\n  other:\n    description: The same, kept for an hour\n    command: exec " + demo + "\n    idle_timeout: 1h\n"
	if err := os.WriteFile(path, []byte(catalog), 0o600); err != nil {
		t.Fatal(err)
	}
	startSpawnerWith(t, func(c *app.Config) { c.Common.Apps = path })

	out, err := cli(t, "apps", "ls")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "demo") ||
		!strings.Contains(lines[1], "yes") || !strings.Contains(lines[2], "other") || !strings.Contains(lines[2], "1h") {
		t.Fatalf("apps ls printed %q", out)
	}

	out, err = cli(t, "sessions", "new", "--app", "other", "-o", "json")
	var rep messages.SpawnReply
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || !rep.Created {
		t.Fatalf("sessions new --app other printed %q (%v)", out, err)
	}
	out, err = cli(t, "sessions", "get", rep.SessionID)
	if err != nil || !strings.Contains(out, "App:") || !strings.Contains(out, "other") || !strings.Contains(out, "1h") {
		t.Fatalf("get printed %q (%v)", out, err)
	}
	out, _ = cli(t, "sessions", "ls")
	if !strings.Contains(out, "APP") || !strings.Contains(out, " other ") {
		t.Errorf("ls printed %q, want the APP column", out)
	}
	if _, err := cli(t, "sessions", "new", "--app", "nope"); err == nil || !strings.Contains(err.Error(), "the apps are demo, other") {
		t.Errorf("new --app nope: %v", err)
	}
}
