package integration

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/client"
	"github.com/spawnerhq/spawner/messages"
)

// An app that exits at start: the 502 and the failed event say how it
// ended and what it wrote last, and name the session once.
func TestFailedSpawnShowsExitStatusAndOutput(t *testing.T) {
	cfg := testConfig(t)
	cfg.Process.Command = "echo starting; echo 'config file /etc/app.toml missing' >&2; exit 3"
	h := start(t, cfg)
	api, _ := client.New(h.BaseURL)
	stream, err := api.Events(t.Context(), client.EventsOptions{NoReplay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	_, err = api.Init(t.Context(), messages.SpawnRequest{})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway || apiErr.Code != messages.CodeSpawnFailed {
		t.Fatalf("Init of an app that exits: %v, want 502 spawn_failed", err)
	}
	t.Logf("502: %s", apiErr.Message)
	created, err := opsNext(t, stream, 10*time.Second)
	if err != nil || created.Type != messages.EventCreating {
		t.Fatalf("first event %+v (%v), want creating", created, err)
	}
	evs := opsSessionEvents(t, stream, created.SessionID, 10*time.Second)
	failed := evs[len(evs)-1]
	for where, msg := range map[string]string{"502": apiErr.Message, "failed event": failed.Error} {
		for _, want := range []string{"exit status 3", "config file /etc/app.toml missing", "starting"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s %q lacks %q", where, msg, want)
			}
		}
		if n := strings.Count(msg, created.SessionID); n > 1 {
			t.Errorf("%s names the session %d times: %q", where, n, msg)
		}
	}
}
