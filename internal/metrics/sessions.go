package metrics

import (
	"context"
	"log/slog"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// WatchSessions keeps spawner_sessions{status} equal to the registry's
// records until ctx is done. It follows a registry cache rather than
// listing the bucket at each scrape, so a scrape costs nothing at any
// session count.
func (m *Metrics) WatchSessions(ctx context.Context, reg *registry.Registry, log *slog.Logger) error {
	if m == nil {
		<-ctx.Done()
		return nil
	}
	for _, st := range []messages.Status{messages.StatusCreating, messages.StatusReady, messages.StatusStopping} {
		m.sessions.WithLabelValues(string(st))
	}
	// The cache reports a record that ended while its watch was down as
	// deleted, so the counts never keep a session that is gone.
	status := map[string]messages.Status{}
	cache := registry.NewCache(reg, nil, log.With("component", "metrics"))
	cache.OnChange(func(c registry.Change) {
		if c.Synced {
			return
		}
		if old, ok := status[c.ID]; ok {
			m.sessions.WithLabelValues(string(old)).Dec()
			delete(status, c.ID)
		}
		if !c.Deleted {
			status[c.ID] = c.Session.Status
			m.sessions.WithLabelValues(string(c.Session.Status)).Inc()
		}
	})
	return cache.Run(ctx)
}
