package main

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// versionText describes the build from the information the Go toolchain
// stamps into every binary: the module version, the commit it was built
// from when built in a git checkout, and the Go version.
func versionText(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "spawner (no build information)\n"
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "spawner %s\n", version)
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		if settings["vcs.modified"] == "true" {
			rev += " (modified)"
		}
		fmt.Fprintf(&b, "  commit  %s\n", rev)
	}
	if t := settings["vcs.time"]; t != "" {
		fmt.Fprintf(&b, "  date    %s\n", t)
	}
	fmt.Fprintf(&b, "  go      %s\n", bi.GoVersion)
	if p := bi.Main.Path; p != "" {
		fmt.Fprintf(&b, "  module  %s\n", p)
	}
	return b.String()
}

func printVersion() {
	bi, ok := debug.ReadBuildInfo()
	fmt.Print(versionText(bi, ok))
}
