package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// StatusChecker asks an app's /status whether it is listening. Backends use
// it while they wait for a new session to be ready.
type StatusChecker struct {
	http *http.Client
}

// NewStatusChecker returns a checker with a short timeout and no
// keep-alives: each check targets a new instance, and a pooled connection
// would count as activity in the app's /status or TCP table.
func NewStatusChecker() StatusChecker {
	return StatusChecker{http: &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			// Instance addresses are local to the backend; a proxy taken
			// from the environment could not reach them.
			Proxy: nil,
		},
	}}
}

// Listening reports whether url answers the seed's /status with
// "listening": true; when it does not, the error says why.
func (c StatusChecker) Listening(ctx context.Context, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, messages.MaxStatusBytes))
		return false, fmt.Errorf("%s answered %s", url, resp.Status)
	}
	st, err := messages.DecodeAppStatus(resp.Body)
	if err != nil {
		return false, fmt.Errorf("%s: %w", url, err)
	}
	if !st.Listening {
		return false, errors.New("/status says not listening")
	}
	return true, nil
}
