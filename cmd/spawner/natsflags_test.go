package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNATSFlagsVerb(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SPAWNER_DATA_DIR", dir)
	t.Setenv("SPAWNER_NATS_URL", "")
	t.Setenv("SPAWNER_NATS_LISTEN", "")
	var out bytes.Buffer
	if err := runNATSFlags(nil, &out); err == nil || !strings.Contains(err.Error(), "SPAWNER_NATS_LISTEN") {
		t.Errorf("an all-in-one without a NATS port: %v, want advice to set SPAWNER_NATS_LISTEN", err)
	}
	t.Setenv("SPAWNER_NATS_LISTEN", "127.0.0.1:4222")
	if err := os.MkdirAll(filepath.Join(dir, "nats"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"client", "ops"} {
		if err := os.WriteFile(filepath.Join(dir, "nats", role+".nk"), []byte("seed"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for args, want := range map[string]string{
		"":    "--server nats://127.0.0.1:4222 --nkey " + filepath.Join(dir, "nats", "client.nk") + " --inbox-prefix _INBOX_spawner_client\n",
		"ops": "--server nats://127.0.0.1:4222 --nkey " + filepath.Join(dir, "nats", "ops.nk") + " --inbox-prefix _INBOX_spawner_ops\n",
	} {
		out.Reset()
		if err := runNATSFlags(strings.Fields(args), &out); err != nil || out.String() != want {
			t.Errorf("nats-flags %s = %q, %v; want %q", args, out.String(), err, want)
		}
	}
	for _, bad := range [][]string{{"root"}, {"client", "ops"}} {
		if err := runNATSFlags(bad, &out); err == nil {
			t.Errorf("nats-flags %v succeeded", bad)
		}
	}
}
