// Package lean runs the modes that start once per session, the demo app
// and the sidecar, importing nothing but them, so that the spawner-demo
// binary stays small and starts in milliseconds. The spawner binary runs
// the same functions for its demo and sidecar modes; there, the other
// modes' package init (client-go's schemes, the Docker client) and the
// larger binary cost tens of milliseconds before main (GODEBUG=inittrace=1).
package lean

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/spawnerhq/spawner/internal/demo"
	"github.com/spawnerhq/spawner/sidecar"
)

// EnvPrefix is the spawner binary's prefix (app.EnvPrefix), repeated here
// because internal/app imports every component.
const EnvPrefix = "SPAWNER"

// Demo runs the bundled demo app on $PORT until ctx ends.
func Demo(ctx context.Context) error {
	var cfg demo.Config
	if err := envconfig.Process("", &cfg); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "demo")
	return demo.New(cfg, time.Now, log).Run(ctx)
}

// Sidecar serves /status for the app on SPAWNER_APP_PORT until ctx ends.
func Sidecar(ctx context.Context) error {
	var cfg sidecar.Config
	if err := envconfig.Process(EnvPrefix, &cfg); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "sidecar")
	s, err := sidecar.New(cfg, time.Now, log)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
