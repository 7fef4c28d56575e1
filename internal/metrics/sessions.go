package metrics

import (
	"context"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// WatchSessions keeps spawner_sessions{status,app} equal to the records
// of cache, which its owner keeps current, until ctx is done. It follows
// the cache rather than listing the bucket at each scrape, so a scrape
// costs nothing at any session count.
func (m *Metrics) WatchSessions(ctx context.Context, cache *registry.Cache) {
	if m == nil {
		<-ctx.Done()
		return
	}
	// The cache reports a record that ended while its watch was down as
	// deleted, so the counts never keep a session that is gone.
	type seen struct {
		status messages.Status
		app    string
	}
	status := map[string]seen{}
	// The handler runs on the cache's goroutine, one change at a time, so
	// status needs no lock.
	cache.OnChange(func(c registry.Change) {
		if c.Synced {
			return
		}
		if old, ok := status[c.ID]; ok {
			m.sessions.WithLabelValues(string(old.status), old.app).Dec()
			delete(status, c.ID)
		}
		if !c.Deleted {
			now := seen{c.Session.Status, AppLabel(c.Session.App)}
			status[c.ID] = now
			m.sessions.WithLabelValues(string(now.status), now.app).Inc()
		}
	})
	<-ctx.Done()
}
