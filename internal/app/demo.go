package app

import (
	"os"
	"path/filepath"
)

// DemoBinary is the lean demo app that "make build" puts beside spawner.
// It links only the demo's packages, so a session's app starts without
// loading and initialising the Kubernetes and Docker clients (see
// cmd/spawner-demo).
const DemoBinary = "spawner-demo"

// DefaultDemoCommand is the app command when none is configured for the
// binary at exe: the lean demo binary beside it when there is one, else
// the same binary's demo mode.
func DefaultDemoCommand(exe string) string {
	lean := filepath.Join(filepath.Dir(exe), DemoBinary)
	if st, err := os.Stat(lean); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return shellQuote(lean)
	}
	return shellQuote(exe) + " demo"
}
