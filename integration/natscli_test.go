package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/messages"
)

// natsCLI runs the nats CLI with the flags "spawner nats-flags role" prints
// for h, and returns what it printed. A run that is still going after
// timeout is stopped; subscriptions end that way.
func natsCLI(t *testing.T, h *harness, role string, timeout time.Duration, args ...string) string {
	t.Helper()
	flagsCmd := exec.Command(spawnerBin, "nats-flags", role)
	flagsCmd.Env = append(os.Environ(), "SPAWNER_NATS_URL="+h.Main.NATSURL(), "SPAWNER_DATA_DIR="+h.Main.Config.Common.DataDir)
	flags, err := flagsCmd.Output()
	if err != nil {
		t.Fatalf("spawner nats-flags %s: %v", role, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nats", append(strings.Fields(string(flags)), args...)...)
	// No context or settings of the developer's own.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_URL=", "NATS_CONTEXT=")
	out, _ := cmd.CombinedOutput()
	t.Logf("nats %s %s:\n%s", role, strings.Join(args, " "), out)
	return string(out)
}

// TestNATSRolesWithTheNATSCLI checks with the real nats CLI what a holder
// of each generated credential can do: client spawns, but cannot listen
// to everything, stop a session or read the bucket; ops reads events and
// the bucket, but cannot spawn; no credentials, no connection.
func TestNATSRolesWithTheNATSCLI(t *testing.T) {
	if _, err := exec.LookPath("nats"); err != nil {
		t.Skip("the nats CLI is not on PATH: go install github.com/nats-io/natscli/nats@v0.5.0")
	}
	h := start(t, testConfig(t))
	const denied = "Permissions Violation"

	// ops listens while client spawns.
	opsEvents := make(chan string, 1)
	go func() {
		opsEvents <- natsCLI(t, h, bus.RoleOps, 20*time.Second, "sub", "spawner.session.>", "--count", "2")
	}()
	time.Sleep(time.Second) // Let the subscription start.
	out := natsCLI(t, h, bus.RoleClient, 20*time.Second, "req", "spawner.session.requested", "{}")
	var rep messages.SpawnReply
	if i := strings.Index(out, "{"); i < 0 || json.Unmarshal([]byte(out[i:]), &rep) != nil || rep.SessionID == "" {
		t.Fatalf("client could not spawn:\n%s", out)
	}
	if ev := <-opsEvents; !strings.Contains(ev, rep.SessionID) {
		t.Errorf("ops saw no event of the new session:\n%s", ev)
	}

	if out := natsCLI(t, h, bus.RoleClient, 3*time.Second, "sub", ">"); !strings.Contains(out, denied) {
		t.Errorf("client may subscribe to everything:\n%s", out)
	}
	stop := `{"session_id":"` + rep.SessionID + `","reason":"deleted"}`
	if out := natsCLI(t, h, bus.RoleClient, 5*time.Second, "req", "spawner.control.stop", stop); !strings.Contains(out, denied) {
		t.Errorf("client may stop a session:\n%s", out)
	}
	if code, _ := get(t, h.BaseURL+"/p/"+rep.SessionID+"/"); code != 200 {
		t.Errorf("after client's stop attempt the session answers %d", code)
	}
	out = natsCLI(t, h, bus.RoleClient, 5*time.Second, "kv", "get", "spawner_sessions", "s."+rep.SessionID)
	if !strings.Contains(out, denied) || strings.Contains(out, "upstream") {
		t.Errorf("client may read the bucket:\n%s", out)
	}

	if out := natsCLI(t, h, bus.RoleOps, 5*time.Second, "kv", "get", "spawner_sessions", "s."+rep.SessionID, "--raw"); !strings.Contains(out, rep.SessionID) {
		t.Errorf("ops cannot read the bucket:\n%s", out)
	}
	if out := natsCLI(t, h, bus.RoleOps, 5*time.Second, "req", "spawner.session.requested", "{}"); !strings.Contains(out, denied) {
		t.Errorf("ops may spawn:\n%s", out)
	}
	if out := natsCLI(t, h, bus.RoleOps, 5*time.Second, "req", "spawner.control.stop", stop); !strings.Contains(out, denied) {
		t.Errorf("ops may stop a session:\n%s", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	anon, _ := exec.CommandContext(ctx, "nats", "--server", h.Main.NATSURL(), "pub", "x", "y").CombinedOutput()
	if !strings.Contains(string(anon), "Authorization Violation") {
		t.Errorf("a client without credentials was not refused:\n%s", anon)
	}
}
