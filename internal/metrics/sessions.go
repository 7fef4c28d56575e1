package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// WatchSessions keeps spawner_sessions{status} equal to the registry's
// records until ctx is done. It follows a watch rather than listing the
// bucket at each scrape, so a scrape costs nothing at any session count.
func (m *Metrics) WatchSessions(ctx context.Context, reg *registry.Registry, log *slog.Logger) error {
	if m == nil {
		<-ctx.Done()
		return nil
	}
	for {
		// A restarted watch delivers every record again, so start empty.
		status := map[string]messages.Status{}
		m.sessions.Reset()
		for _, st := range []messages.Status{messages.StatusCreating, messages.StatusReady, messages.StatusStopping} {
			m.sessions.WithLabelValues(string(st))
		}
		err := reg.Watch(ctx, func(c registry.Change) {
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
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("session gauge: registry watch ended; restarting", "component", "metrics", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
