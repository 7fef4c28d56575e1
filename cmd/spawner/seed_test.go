package main

import (
	"os"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/internal/app"
)

func TestSplitMode(t *testing.T) {
	for _, c := range []struct {
		args []string
		mode string
		rest int
	}{
		{nil, "all", 0},
		{[]string{"gateway"}, "gateway", 0},
		{[]string{"--application-image", "img"}, "all", 2},
		{[]string{"--application-image=img"}, "all", 1},
		{[]string{"provisioner", "--application-image", "img"}, "provisioner", 2},
		{[]string{"--help"}, "--help", 0},
	} {
		mode, rest := splitMode(c.args)
		if mode != c.mode || len(rest) != c.rest {
			t.Errorf("splitMode(%q) = %q %q", c.args, mode, rest)
		}
	}
}

// TestApplicationImageFlagIsTheSetting checks the seed's flag the way the
// provisioner reads it: through LoadConfig.
func TestApplicationImageFlagIsTheSetting(t *testing.T) {
	t.Setenv("SPAWNER_APPLICATION_IMAGE", "from-env:1")
	if err := applyComponentFlags(nil, os.Stderr); err != nil {
		t.Fatal(err)
	}
	if got := loadImages(t); got != "from-env:1 from-env:1" {
		t.Errorf("with no flag: images %q, want the variable's", got)
	}
	for _, args := range [][]string{{"--application-image", "seed/app:2"}, {"--application-image=seed/app:2"}, {"-application-image", "seed/app:2"}} {
		if err := applyComponentFlags(args, os.Stderr); err != nil {
			t.Fatal(err)
		}
		if got := loadImages(t); got != "seed/app:2 seed/app:2" {
			t.Errorf("%q: docker and kubernetes images %q, want the flag's", args, got)
		}
	}
	for _, bad := range [][]string{{"--application-image"}, {"--image", "x"}, {"stray"}} {
		if err := applyComponentFlags(bad, &strings.Builder{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func loadImages(t *testing.T) string {
	t.Helper()
	cfg, err := loadConfigForTest()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Docker.Image + " " + cfg.Kube.Image
}

func loadConfigForTest() (app.Config, error) { return app.LoadConfig() }
