package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionReportsTheBuild(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/spawnerhq/spawner", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "3466e01abc"},
			{Key: "vcs.time", Value: "2026-11-30T22:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	got := versionText(bi, true)
	for _, want := range []string{"spawner v1.2.3\n", "commit  3466e01abc (modified)", "date    2026-11-30T22:00:00Z", "go      go1.26.8", "module  github.com/spawnerhq/spawner"} {
		if !strings.Contains(got, want) {
			t.Errorf("version text lacks %q:\n%s", want, got)
		}
	}
	bi.Settings = nil
	bi.Main.Version = ""
	if got := versionText(bi, true); strings.Contains(got, "commit") || !strings.HasPrefix(got, "spawner (devel)") {
		t.Errorf("a build outside git: %q", got)
	}
	if got := versionText(nil, false); !strings.Contains(got, "no build information") {
		t.Errorf("no build info: %q", got)
	}
	// This test binary's own build info names the Go that built it.
	real, ok := debug.ReadBuildInfo()
	if got := versionText(real, ok); !strings.Contains(got, runtime.Version()) {
		t.Errorf("real build: %q lacks %s", got, runtime.Version())
	}
}
