package catalog_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/catalog"
)

const twoApps = `
default: demo
apps:
  demo:
    description: The collaborative note
    command: exec spawner demo          # process backend
    idle_timeout: 10m
  files:
    command: exec python3 -m http.server $PORT --bind $HOST
    status_source: sidecar
    routing: path
    idle_timeout: 30s
    max_lifetime: 8h
    warm_pool: 1
    env: {LANG: C.UTF-8}
    env_allow: [DATASET]
    labels: {tier: small}
    image: registry.example.com/files:1
    resources: {cpu: "1", memory: 1Gi, gpu: 0}
    pod_template: {}
`

func write(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadTheIssuesExample(t *testing.T) {
	c, err := catalog.Load(write(t, "apps.yaml", twoApps))
	if err != nil {
		t.Fatal(err)
	}
	if c.Default != "demo" || strings.Join(c.Names(), ",") != "demo,files" {
		t.Fatalf("default %q, names %v", c.Default, c.Names())
	}
	f, _ := c.Get("files")
	if f.IdleTimeout != 30*time.Second || f.MaxLifetime != 8*time.Hour || f.WarmPool != 1 ||
		f.StatusSource != "sidecar" || f.Env["LANG"] != "C.UTF-8" || f.EnvAllow[0] != "DATASET" ||
		f.Labels["tier"] != "small" || f.Resources != (catalog.Resources{CPU: "1", Memory: "1Gi"}) || string(f.PodTemplate) != "{}" {
		t.Fatalf("files = %+v", f)
	}
	if d, _ := c.Get(""); d.Name != "demo" || d.IdleTimeout != 10*time.Minute {
		t.Fatalf("default app = %+v", d)
	}
}

func TestJSONWorksToo(t *testing.T) {
	c, err := catalog.Load(write(t, "apps.json", `{"default":"a","apps":{"a":{"command":"exec x","resources":{"cpu":2}},"b":{"idle_timeout":"1m"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := c.Get("a"); a.Resources.CPU != "2" {
		t.Fatalf("cpu = %q", a.Resources.CPU)
	}
}

func TestListHidesEnvValues(t *testing.T) {
	c, err := catalog.Parse("apps.yaml", []byte("apps:\n  a:\n    env: {TOKEN: s3cret, LANG: C}\n"))
	if err != nil {
		t.Fatal(err)
	}
	l := c.List()
	if len(l) != 1 || !l[0].Default || strings.Join(l[0].Env, ",") != "LANG,TOKEN" {
		t.Fatalf("list = %+v", l)
	}
}

func TestResolveUnknownListsTheApps(t *testing.T) {
	c, _ := catalog.Parse("apps.yaml", []byte(twoApps))
	_, err := c.Resolve("jupyter")
	if err == nil || !strings.Contains(err.Error(), `"jupyter"`) || !strings.Contains(err.Error(), "demo, files") {
		t.Fatalf("err = %v", err)
	}
}

func TestBadCatalogs(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"duplicate name", "default: a\napps:\n  a: {command: x}\n  a: {command: y}\n", `line 4: "a" appears twice`},
		{"duplicate in JSON", `{"default":"a","apps":{"a":{},"a":{}}}`, `"a" appears twice`},
		{"unknown field", "default: a\napps:\n  a:\n    comand: x\n", `app "a": unknown field "comand"; the fields are description, command`},
		{"unknown top-level field", "default: a\napp: {}\n", `unknown field "app"`},
		{"no default", "apps:\n  a: {}\n  b: {}\n", `no default: set "default" to one of a, b`},
		{"default not an app", "default: c\napps:\n  a: {}\n", `default "c" is not an app; the apps are a`},
		{"bad duration", "default: a\napps:\n  a:\n    idle_timeout: 10 minutes\n", `app "a": field "idle_timeout": "10 minutes" is not a duration`},
		{"zero idle timeout", "apps:\n  a:\n    idle_timeout: 0s\n", `field "idle_timeout": 0s: want 1s`},
		{"bad routing", "apps:\n  a:\n    routing: hostname\n", `app "a": field "routing"`},
		{"bad status source", "apps:\n  a:\n    status_source: app,sidecar\n", `app "a": field "status_source"`},
		{"bad env name", "apps:\n  a:\n    env: {PORT: '1'}\n", `field "env": env: "PORT" is reserved`},
		{"bad env_allow", "apps:\n  a:\n    env_allow: [\"A B\"]\n", `field "env_allow"`},
		{"bad label", "apps:\n  a:\n    labels: {\"spawner.dev/app\": x}\n", `field "labels"`},
		{"bad memory", "apps:\n  a:\n    resources: {memory: lots}\n", `field "resources.memory": "lots"`},
		{"bad gpu", "apps:\n  a:\n    resources: {gpu: -1}\n", `field "resources.gpu"`},
		{"wrong type", "apps:\n  a:\n    warm_pool: many\n", `field "warm_pool"`},
		{"bad pod template", "apps:\n  a:\n    pod_template: [1]\n", `field "pod_template"`},
		{"bad name", "apps:\n  A_B: {}\n", `app "A_B": the name`},
		{"no apps", "default: a\n", "no apps"},
		{"null app", "apps:\n  a:\n", `app "a": want an object`},
		{"not YAML", "apps: [\n", "catalog apps.yaml: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := catalog.Parse("apps.yaml", []byte(tc.body))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), "catalog apps.yaml") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant it to name the file and contain %q", err, tc.want)
			}
		})
	}
}

func TestCheckNamesFileAppAndField(t *testing.T) {
	c, _ := catalog.Parse("apps.yaml", []byte(twoApps))
	err := c.Check(func(a catalog.App) error {
		if a.Name == "files" {
			return catalog.Fieldf("routing", "nope")
		}
		return nil
	})
	if err == nil || err.Error() != `catalog apps.yaml: app "files": field "routing": nope` {
		t.Fatalf("err = %v", err)
	}
}

func TestMissingFile(t *testing.T) {
	if _, err := catalog.Load(filepath.Join(t.TempDir(), "nope.yaml")); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(twoApps))
	f.Add([]byte(`{"default":"a","apps":{"a":{"resources":{"cpu":1.5}}}}`))
	f.Add([]byte("apps:\n  a: &x {command: y}\n  b: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := catalog.Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "catalog fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if _, ok := c.Get(c.Default); !ok {
			t.Fatalf("default %q is not an app", c.Default)
		}
		_ = c.List()
	})
}
