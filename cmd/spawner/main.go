// Command spawner runs Spawner. With no arguments it runs everything in one
// process on an embedded NATS server; each subcommand runs one component.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/internal/demo"
	"github.com/spawnerhq/spawner/sidecar"
)

const usage = `spawner: a back-end process for every browser session.

Usage:
  spawner [all]        gateway, provisioner, prober and reaper in one process,
                       on an embedded NATS server unless SPAWNER_NATS_URL is set
  spawner gateway      the HTTP API and the /p/<id>/ proxy
  spawner provisioner  the worker pool that starts and stops sessions
  spawner prober       polls each session's /status and publishes heartbeats
  spawner reaper       ends idle sessions
  spawner nats         a standalone NATS server with JetStream
  spawner nats-flags [ROLE]
                       nats CLI flags that connect as ROLE (default client)
  spawner sidecar      serves /status from the kernel's TCP table (SPAWNER_APP_PORT)
  spawner demo         the bundled demo app, on $PORT
  spawner sessions     ls|get|new|rm: manage sessions through the API
  spawner events       print session lifecycle events as they happen
  spawner apps         ls: list the apps a session may run
  spawner help         this text and every setting

Settings come from the environment; "spawner help" lists them.
`

func main() {
	mode, args := "all", []string{}
	if len(os.Args) > 1 {
		mode, args = os.Args[1], os.Args[2:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, mode, args); err != nil {
		fmt.Fprintln(os.Stderr, "spawner:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, mode string, args []string) error {
	switch mode {
	case "help", "-h", "--help":
		fmt.Print(usage, "\nSettings:\n", app.Usage())
		return nil
	case "demo":
		return runDemo(ctx)
	case "sidecar":
		return runSidecar(ctx)
	case "nats":
		return runNATS(ctx)
	case "nats-flags":
		return runNATSFlags(args, os.Stdout)
	case "sessions":
		return runSessions(ctx, args, os.Stdout, os.Stderr)
	case "events":
		return runEvents(ctx, args, os.Stdout, os.Stderr)
	case "apps":
		return runApps(ctx, args, os.Stdout, os.Stderr)
	case "all", "gateway", "provisioner", "prober", "reaper":
		return runComponents(ctx, app.Mode(mode))
	default:
		return fmt.Errorf("unknown mode %q\n\n%s", mode, usage)
	}
}

func runComponents(ctx context.Context, mode app.Mode) error {
	cfg, err := app.LoadConfig()
	if err != nil {
		return err
	}
	log, err := app.NewLogger(cfg.Common)
	if err != nil {
		return err
	}
	if mode != app.ModeAll && cfg.Bus.URL == "" {
		return errors.New("SPAWNER_NATS_URL is required outside the all-in-one mode")
	}
	m := app.NewMain(cfg, log)
	return m.Run(ctx, mode)
}

func runDemo(ctx context.Context) error {
	var cfg demo.Config
	if err := envconfig.Process("", &cfg); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "demo")
	return demo.New(cfg, time.Now, log).Run(ctx)
}

func runSidecar(ctx context.Context) error {
	var cfg sidecar.Config
	if err := envconfig.Process(app.EnvPrefix, &cfg); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "sidecar")
	s, err := sidecar.New(cfg, time.Now, log)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
