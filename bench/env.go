package bench

import (
	"log/slog"
	"os"
	"path/filepath"
)

// Env is what every measurement needs: the binaries under test, a scratch
// directory and how thorough to be.
type Env struct {
	// SpawnerBin is the spawner binary: the control plane and the demo app.
	SpawnerBin string
	// UpstreamBin is benchupstream, the stand-in app and status servers.
	UpstreamBin string
	// Dir is scratch space, removed by the caller.
	Dir string
	// Quick shrinks every measurement, for trying the harness out.
	Quick bool
	Log   *slog.Logger
}

// Scratch returns a new directory under Dir for one measurement.
func (e *Env) Scratch(name string) string {
	d := filepath.Join(e.Dir, name)
	_ = os.MkdirAll(d, 0o755)
	return d
}

// pick returns quick when the run is quick, else full.
func pick[T any](e *Env, full, quick T) T {
	if e.Quick {
		return quick
	}
	return full
}
