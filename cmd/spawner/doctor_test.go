package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"sigs.k8s.io/yaml"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/bustest"
)

// doctorConfig is the default configuration with free ports and a fresh
// data dir, as on a new machine.
func doctorConfig(t *testing.T) app.Config {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "SPAWNER_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	cfg, err := app.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Common.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Gateway.HTTPAddr = freeAddr(t)
	cfg.Bus.Listen = freeAddr(t)
	return cfg
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// result finds the named check, failing the test when it did not run.
func result(t *testing.T, results []checkResult, name string) checkResult {
	t.Helper()
	for _, r := range results {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no %q check in %+v", name, results)
	return checkResult{}
}

func TestDoctorPassesOnTheDefaultSetup(t *testing.T) {
	cfg := doctorConfig(t)
	results := doctor(t.Context(), cfg)
	var out bytes.Buffer
	if n := printResults(&out, results); n != 0 {
		t.Fatalf("%d checks failed on the default setup:\n%s", n, out.String())
	}
	for _, name := range []string{"data dir", "http", "nats", "app command"} {
		if r := result(t, results, name); !strings.Contains(out.String(), "ok    "+name) {
			t.Errorf("output lacks an ok line for %s (%+v):\n%s", name, r, out.String())
		}
	}
	if _, err := os.Stat(cfg.Common.DataDir); err != nil {
		t.Errorf("the data dir check did not create it: %v", err)
	}
}

func TestDoctorFailsOnAPortInUse(t *testing.T) {
	cfg := doctorConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg.Gateway.HTTPAddr = ln.Addr().String()
	r := result(t, doctor(t.Context(), cfg), "http")
	if r.OK || !strings.Contains(r.Detail, cfg.Gateway.HTTPAddr) || !strings.Contains(r.Fix, "SPAWNER_HTTP_ADDR") {
		t.Errorf("port in use: %+v, want a failure naming the address and SPAWNER_HTTP_ADDR", r)
	}
}

func TestDoctorRecognisesARunningSpawnerOnItsPort(t *testing.T) {
	url := startSpawner(t)
	r := checkPort(t.Context(), "http", "SPAWNER_HTTP_ADDR", strings.TrimPrefix(url, "http://"))
	if r.OK || !strings.Contains(r.Detail, "running Spawner") {
		t.Errorf("port of a running Spawner: %+v", r)
	}
}

func TestDoctorFailsOnAMissingAppCommand(t *testing.T) {
	cfg := doctorConfig(t)
	cfg.Process.Command = "MODE=fast no-such-app-xyz --port $PORT"
	r := result(t, doctor(t.Context(), cfg), "app command")
	if r.OK || !strings.Contains(r.Detail, "no-such-app-xyz") || r.Fix == "" {
		t.Errorf("missing command: %+v, want a failure naming no-such-app-xyz with a fix", r)
	}
	if r := checkAppCommand("exec no-such-app-xyz"); r.OK {
		t.Errorf("exec of a missing command: %+v, want a failure", r)
	}
	for _, ok := range []string{"sh -c 'exec true'", "'" + os.Args[0] + "' demo", "true", "exec true --x", "cd /tmp && no-such-app-xyz"} {
		if r := checkAppCommand(ok); !r.OK {
			t.Errorf("%q: %+v, want ok", ok, r)
		}
	}
}

func TestDoctorFailsOnADataDirItCannotWrite(t *testing.T) {
	cfg := doctorConfig(t)
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Common.DataDir = filepath.Join(file, "data") // beneath a file: even root cannot
	r := result(t, doctor(t.Context(), cfg), "data dir")
	if r.OK || !strings.Contains(r.Fix, "SPAWNER_DATA_DIR") {
		t.Errorf("unwritable data dir: %+v", r)
	}
}

func TestDoctorExitsNonZeroOnAFailure(t *testing.T) {
	cfg := doctorConfig(t)
	t.Setenv("SPAWNER_HTTP_ADDR", cfg.Gateway.HTTPAddr)
	t.Setenv("SPAWNER_NATS_LISTEN", cfg.Bus.Listen)
	t.Setenv("SPAWNER_DATA_DIR", cfg.Common.DataDir)
	t.Setenv("SPAWNER_APP_COMMAND", "no-such-app-xyz")
	var out bytes.Buffer
	err := runDoctor(t.Context(), nil, &out)
	if err == nil || !strings.Contains(out.String(), "FAIL  app command") || !strings.Contains(out.String(), "fix: ") {
		t.Fatalf("doctor with a missing app: err %v, output:\n%s", err, out.String())
	}
	t.Setenv("SPAWNER_APP_COMMAND", "")
	out.Reset()
	if err := runDoctor(t.Context(), nil, &out); err != nil {
		t.Fatalf("doctor on a good setup: %v\n%s", err, out.String())
	}
	t.Setenv("SPAWNER_IDLE_TIMEOUT", "soon")
	out.Reset()
	if err := runDoctor(t.Context(), nil, &out); err == nil || !strings.Contains(out.String(), "FAIL  settings") || !strings.Contains(out.String(), "IDLE_TIMEOUT") {
		t.Fatalf("doctor with a malformed setting: %v\n%s", err, out.String())
	}
}

func TestDoctorChecksAnExternalNATS(t *testing.T) {
	env := bustest.Run(t)
	if r := checkNATS(t.Context(), env.Config); !r.OK || !strings.Contains(r.Detail, "JetStream enabled") {
		t.Errorf("NATS with JetStream: %+v", r)
	}

	plain, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go plain.Start()
	defer plain.Shutdown()
	if !plain.ReadyForConnections(5e9) {
		t.Fatal("nats without jetstream did not start")
	}
	r := checkNATS(t.Context(), bus.Config{URL: plain.ClientURL()})
	if r.OK || !strings.Contains(r.Detail, "JetStream is not enabled") || !strings.Contains(r.Fix, "-js") {
		t.Errorf("NATS without JetStream: %+v", r)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r = checkNATS(ctx, bus.Config{URL: "nats://" + freeAddr(t)})
	if r.OK || !strings.Contains(r.Detail, "nothing answers") {
		t.Errorf("no NATS: %+v", r)
	}
}

func TestDoctorChecksKubernetesAccess(t *testing.T) {
	kubeconfig := os.Getenv("SPAWNER_TEST_KUBECONFIG")
	if _, err := os.Stat(kubeconfig); kubeconfig == "" || err != nil {
		t.Skip("no control plane: SPAWNER_TEST_KUBECONFIG is not up")
	}
	cfg := doctorConfig(t)
	cfg.Provisioner.Backend = "kubernetes"
	cfg.Kube.Kubeconfig = kubeconfig
	results := doctor(t.Context(), cfg)
	for _, name := range []string{"kubernetes", "rbac"} {
		if r := result(t, results, name); !r.OK {
			t.Errorf("%s: %+v", name, r)
		}
	}
	cfg.Kube.Kubeconfig = filepath.Join(t.TempDir(), "missing")
	if r := result(t, doctor(t.Context(), cfg), "kubernetes"); r.OK {
		t.Errorf("a missing kubeconfig passed: %+v", r)
	}
}

// TestDoctorAsksForWhatTheRoleGrants keeps the doctor's access list and
// deploy/rbac.yaml's Role the same.
func TestDoctorAsksForWhatTheRoleGrants(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	granted := map[string]bool{}
	for _, doc := range strings.Split(string(raw), "\n---") {
		var obj struct {
			Kind  string `json:"kind"`
			Rules []struct {
				Resources []string `json:"resources"`
				Verbs     []string `json:"verbs"`
			} `json:"rules"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		if obj.Kind != "Role" {
			continue
		}
		for _, r := range obj.Rules {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					granted[v+" "+res] = true
				}
			}
		}
	}
	asked := map[string]bool{}
	for _, a := range kubeAccess {
		res := a.resource
		if a.subresource != "" {
			res += "/" + a.subresource
		}
		for _, v := range a.verbs {
			asked[v+" "+res] = true
		}
	}
	if len(granted) == 0 || len(granted) != len(asked) {
		t.Fatalf("the Role grants %v, the doctor asks for %v", granted, asked)
	}
	for k := range granted {
		if !asked[k] {
			t.Errorf("the Role grants %q, which the doctor does not check", k)
		}
	}
}
