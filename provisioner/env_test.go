package provisioner_test

import (
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

// Variables that change how the app's programs load are refused before
// anything starts, unless the operator allows them.
func TestSpawnRefusesLoaderEnv(t *testing.T) {
	h := newHarness(t, testConfig())
	h.run(t)
	for _, name := range []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "BASH_ENV", "NODE_OPTIONS"} {
		rep := h.spawn(t, messages.SpawnRequest{Env: map[string]string{name: "/tmp/evil"}})
		if rep.Error == nil || rep.Error.Code != messages.CodeBadRequest || !strings.Contains(rep.Error.Message, name) {
			t.Errorf("spawn with %s = %+v, want bad_request naming it", name, rep)
		}
	}
	if n := h.backend.starts(); n != 0 {
		t.Errorf("%d instances started", n)
	}
}

func TestEnvAllowLetsTheOperatorChoose(t *testing.T) {
	cfg := testConfig()
	cfg.EnvAllow = "LD_LIBRARY_PATH,APP_*"
	h := newHarness(t, cfg)
	h.run(t)
	if rep := h.spawn(t, messages.SpawnRequest{Env: map[string]string{"LD_LIBRARY_PATH": "/opt/lib", "APP_MODE": "x"}}); rep.Error != nil {
		t.Fatalf("allowed names refused: %+v", rep.Error)
	}
	if rep := h.spawn(t, messages.SpawnRequest{Env: map[string]string{"GREETING": "hi"}}); rep.Error == nil || rep.Error.Code != messages.CodeBadRequest {
		t.Fatalf("a name outside SPAWNER_ENV_ALLOW: %+v", rep)
	}
	if n := h.backend.starts(); n != 1 {
		t.Errorf("%d instances started, want 1", n)
	}
}
