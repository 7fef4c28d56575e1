// Command spawner runs Spawner. With no arguments it runs everything in one
// process on an embedded NATS server; each subcommand runs one component.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/internal/lean"
)

const usage = `spawner: a back-end process for every browser session.

Usage:
  spawner [all]        gateway, provisioner, prober and reaper in one process,
                       on an embedded NATS server unless SPAWNER_NATS_URL is set;
                       every component mode takes --application-image IMAGE,
                       an alias of SPAWNER_APPLICATION_IMAGE
  spawner gateway      the HTTP API and the /p/<id>/ proxy
  spawner provisioner  the worker pool that starts and stops sessions
  spawner prober       polls each session's /status and publishes heartbeats
  spawner reaper       ends idle sessions
  spawner nats         a standalone NATS server with JetStream
  spawner nats-flags [ROLE]
                       nats CLI flags that connect as ROLE (default client)
  spawner sidecar      serves /status from the kernel's TCP table (SPAWNER_APP_PORT)
  spawner demo         the bundled demo app, on $PORT; spawner-demo, beside this
                       binary after "make build", is the same app, lean, and
                       the default app when present
  spawner sessions     ls|get|new|rm: manage sessions through the API
  spawner events       print session lifecycle events as they happen
  spawner apps         ls: list the apps a session may run
  spawner doctor       check ports, NATS, the backend, the app command and the
                       data dir; prints a fix for each failure
  spawner version      the version, commit and Go version of this binary
  spawner help         this text and every setting

The CLI verbs (sessions, events) reach the gateway at SPAWNER_API_URL, or,
when it is unset, at the address in SPAWNER_HTTP_ADDR (":9090" means
http://127.0.0.1:9090); --api URL overrides both. SPAWNER_API_TOKEN is
their bearer token.

Settings come from the environment; "spawner help" lists them.
`

func main() {
	mode, args := splitMode(os.Args[1:])
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
		return lean.Demo(ctx)
	case "sidecar":
		return lean.Sidecar(ctx)
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
	case "version", "--version":
		printVersion()
		return nil
	case "doctor":
		return runDoctor(ctx, args, os.Stdout)
	case "all", "gateway", "provisioner", "prober", "reaper":
		if err := applyComponentFlags(args, os.Stderr); err != nil {
			return err
		}
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
	if cfg.Common.Apps != "" {
		// SIGHUP reloads the app catalog; live sessions keep running.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					if err := m.Reload(); err != nil {
						log.Error("catalog not reloaded; the old one stays in force", "err", err)
					}
				}
			}
		}()
	}
	return m.Run(ctx, mode)
}
