package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spawnerhq/spawner/sidecar"
)

// localSidecar serves /status for a process-backend app that has none, by
// watching the app's port in this machine's TCP table: the process
// backend's apps share Spawner's network namespace, and each has a port of
// its own, so the port alone tells its connections apart.
func localSidecar(host string, appPort int) (string, func(), error) {
	w, err := sidecar.NewWatcher(appPort, time.Now, sidecar.DefaultTables)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", nil, fmt.Errorf("sidecar listen: %w", err)
	}
	srv := &http.Server{Handler: sidecar.Handler(w), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = ln.Close()
		}
	}()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
	return "http://" + ln.Addr().String() + "/status", stop, nil
}
