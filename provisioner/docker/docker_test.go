package docker

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/provisioner"
)

func validConfig() Config {
	return Config{Image: "spawner-demo:latest", Port: 8080, Network: "spawner", Route: "ip",
		Memory: "256m", CPUs: 1, PidsLimit: 512, StatusSource: "app", SidecarImage: "spawner:latest"}
}

func TestNewRejectsBadSettings(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"no image":          func(c *Config) { c.Image = "" },
		"port zero":         func(c *Config) { c.Port = 0 },
		"port too large":    func(c *Config) { c.Port = 70000 },
		"network with /":    func(c *Config) { c.Network = "a/b" },
		"empty network":     func(c *Config) { c.Network = "" },
		"route":             func(c *Config) { c.Route = "dns" },
		"status source":     func(c *Config) { c.StatusSource = "proc" },
		"sidecar no image":  func(c *Config) { c.StatusSource, c.SidecarImage = "sidecar", "" },
		"memory garbage":    func(c *Config) { c.Memory = "lots" },
		"memory too small":  func(c *Config) { c.Memory = "1m" },
		"negative cpus":     func(c *Config) { c.CPUs = -1 },
		"negative pids cap": func(c *Config) { c.PidsLimit = -1 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := validConfig()
			mutate(&cfg)
			if _, err := New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.HasPrefix(err.Error(), "docker backend: ") {
				t.Fatalf("New accepted %+v (err %v)", cfg, err)
			}
		})
	}
	if _, err := New(validConfig(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("New refused the defaults: %v", err)
	}
}

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "256m": 256 << 20, "1g": 1 << 30, "1.5g": 3 << 29, "64MiB": 64 << 20, "512M": 512 << 20} {
		got, err := parseMemory(in)
		if err != nil || got != want {
			t.Errorf("parseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func FuzzParseMemory(f *testing.F) {
	for _, s := range []string{"256m", "1g", "0", "", "-1m", "9999999999999t", "1.5Gi", "m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseMemory(s)
		if err == nil && n != 0 && n < 6<<20 {
			t.Fatalf("parseMemory(%q) = %d, under the engine's minimum", s, n)
		}
		if err != nil && n != 0 {
			t.Fatalf("parseMemory(%q) returned %d with error %v", s, n, err)
		}
	})
}

func TestContainerSpec(t *testing.T) {
	cfg := validConfig()
	cfg.ReadOnly = true
	b, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	spec := provisioner.Spec{SessionID: "abc", URL: "http://127.0.0.1:8080/p/abc/", BasePath: "/p/abc/",
		Env: map[string]string{"B": "2", "A": "1"}, Labels: map[string]string{"team": "blue"}}
	app, err := b.settingsOf(spec)
	if err != nil {
		t.Fatal(err)
	}
	c := b.appConfig(spec, app)
	want := []string{"A=1", "B=2", "PORT=8080", "SPAWNER_SESSION_ID=abc", "SPAWNER_SESSION_URL=http://127.0.0.1:8080/p/abc/",
		"SPAWNER_BASE_PATH=/p/abc/"}
	if !slices.Equal(c.Env, want) {
		t.Errorf("env %v, want %v (sorted user env, then Spawner's, no HOST)", c.Env, want)
	}
	if c.Labels["team"] != "blue" || c.Labels[LabelManagedBy] != ManagedBy || c.Labels[LabelSession] != "abc" ||
		c.Labels[LabelRole] != RoleApp || c.Labels[LabelNetwork] != "spawner" {
		t.Errorf("labels %v", c.Labels)
	}
	h := b.appHostConfig(app)
	if h.Privileged || !slices.Equal(h.CapDrop, []string{"ALL"}) || !slices.Equal(h.SecurityOpt, []string{"no-new-privileges"}) {
		t.Errorf("privileges: %v %v %v", h.Privileged, h.CapDrop, h.SecurityOpt)
	}
	if !h.ReadonlyRootfs || h.Tmpfs["/tmp"] == "" {
		t.Errorf("read-only %v with tmpfs %v, want a read-only root and a /tmp", h.ReadonlyRootfs, h.Tmpfs)
	}
	if h.Memory != 256<<20 || h.MemorySwap != h.Memory || h.NanoCPUs != 1e9 || *h.PidsLimit != 512 {
		t.Errorf("limits %+v", h.Resources)
	}
	if string(h.NetworkMode) != "spawner" {
		t.Errorf("network mode %q", h.NetworkMode)
	}
}

func TestInstanceRoutes(t *testing.T) {
	for _, tc := range []struct {
		route, source, upstream, status string
	}{
		{"ip", "app", "172.18.0.5:8080", "http://172.18.0.5:8080/status"},
		{"name", "app", "spawner-abc:8080", "http://spawner-abc:8080/status"},
		{"ip", "sidecar", "172.18.0.5:8080", "http://172.18.0.5:7070/status"},
		{"name", "sidecar", "spawner-abc:8080", "http://spawner-abc:7070/status"},
	} {
		cfg := validConfig()
		cfg.Route, cfg.StatusSource = tc.route, tc.source
		b, err := New(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		inst := b.instance("abc", b.endpoint("abc", "172.18.0.5"), "h", b.sources)
		if inst.Upstream != tc.upstream || inst.StatusURL != tc.status {
			t.Errorf("route %s, status %s: got %s and %s, want %s and %s", tc.route, tc.source, inst.Upstream, inst.StatusURL, tc.upstream, tc.status)
		}
	}
}
