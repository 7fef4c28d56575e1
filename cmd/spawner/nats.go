package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/internal/bus"
)

// runNATS serves a standalone NATS with JetStream, for stacks that have no
// NATS of their own (the compose file uses it). Unless the operator set a
// user and password, it requires one generated NKey per role, written
// into the data dir, where each component started on the same data dir
// finds its own.
func runNATS(ctx context.Context) error {
	cfg, err := app.LoadConfig()
	if err != nil {
		return err
	}
	log, err := app.NewLogger(cfg.Common)
	if err != nil {
		return err
	}
	emb, err := bus.StartEmbedded(cfg.Bus, cfg.Common.DataDir, true, log)
	if err != nil {
		return err
	}
	auth := "generated role credentials in " + bus.CredentialsDir(cfg.Common.DataDir)
	if cfg.Bus.User != "" {
		auth = "the configured user"
	}
	log.Info("nats listening", "url", emb.Server.ClientURL(), "auth", auth)
	if cfg.Bus.ClusterConfig.Enabled() {
		// Every server of the cluster needs the same role keys: copy this
		// data dir's nats/*.nk to the others before their first start.
		log.Info("nats clustering", "server", emb.Server.Name(), "cluster_listen", cfg.Bus.ClusterListen,
			"routes", len(cfg.Bus.Routes), "replicas", cfg.Bus.Replicas)
	}
	if l := cfg.Bus.LeafConfig; l.LeafListen != "" || len(l.LeafRemotes) > 0 {
		domain := ""
		if js := emb.Server.JetStreamConfig(); js != nil {
			domain = js.Domain
		}
		log.Info("nats leaf nodes", "server", emb.Server.Name(), "pool", cfg.Bus.Pool,
			"leaf_listen", l.LeafListen, "remotes", len(l.LeafRemotes), "jetstream_domain", domain)
	}
	if cfg.Bus.ClusterConfig.Enabled() {
		logMetaLeader(ctx, emb, log)
	}
	<-ctx.Done()
	emb.Shutdown()
	return nil
}

// logMetaLeader logs when this server becomes or stops being the leader of
// the JetStream meta group, which an operator (and the cluster fault
// test) needs to know and the embedded server's own log does not say.
func logMetaLeader(ctx context.Context, emb *bus.Embedded, log *slog.Logger) {
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		leader, first := false, true
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if now := emb.Server.JetStreamIsLeader(); now != leader || first {
				leader, first = now, false
				log.Info("jetstream meta leader", "server", emb.Server.Name(), "leader", leader)
			}
		}
	}()
}

// runNATSFlags prints the nats CLI flags that connect as a role (default
// client) to the NATS this configuration uses.
func runNATSFlags(args []string, stdout io.Writer) error {
	if len(args) > 1 {
		return errors.New("usage: spawner nats-flags [ROLE]")
	}
	role := bus.RoleClient
	if len(args) == 1 {
		role = args[0]
	}
	cfg, err := app.LoadConfig()
	if err != nil {
		return err
	}
	flags, err := bus.NATSFlags(cfg.Bus, cfg.Common.DataDir, role)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, strings.Join(flags, " "))
	return err
}
