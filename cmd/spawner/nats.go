package main

import (
	"context"
	"path/filepath"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/internal/bus"
)

// runNATS serves a standalone NATS with JetStream, for stacks that have no
// NATS of their own (the compose file uses it).
func runNATS(ctx context.Context) error {
	cfg, err := app.LoadConfig()
	if err != nil {
		return err
	}
	log, err := app.NewLogger(cfg.Common)
	if err != nil {
		return err
	}
	srv, err := bus.RunEmbedded(bus.EmbeddedFrom(cfg.Bus, filepath.Join(cfg.Common.DataDir, "nats")))
	if err != nil {
		return err
	}
	log.Info("nats listening", "url", srv.ClientURL())
	<-ctx.Done()
	srv.Shutdown()
	srv.WaitForShutdown()
	return nil
}
