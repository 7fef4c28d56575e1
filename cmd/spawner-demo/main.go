// Command spawner-demo is the lean binary for what runs beside every
// session: the demo app (the default) and the sidecar. It links only
// those, so it is a few megabytes and ready in milliseconds, where the
// spawner binary, which has the same modes, first loads and initialises
// every backend's client. "make build" puts it beside spawner, which then
// uses it as the default app.
//
//	spawner-demo [demo]   the demo app on $PORT (and $HOST)
//	spawner-demo sidecar  /status from the TCP table for SPAWNER_APP_PORT
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spawnerhq/spawner/internal/lean"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	mode := "demo"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	var err error
	switch mode {
	case "demo":
		err = lean.Demo(ctx)
	case "sidecar":
		err = lean.Sidecar(ctx)
	default:
		err = fmt.Errorf("unknown mode %q: want demo or sidecar", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "spawner-demo:", err)
		os.Exit(1)
	}
}
