package reaper

import (
	"context"
	"sync"
	"time"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// records is the reaper's copy of the session registry, fed by a watch,
// so that deciding on a heartbeat costs a map lookup rather than a KV
// read. At 10,000 sessions those reads were a third of the reaper's CPU
// and queued behind the bucket's writes. The copy may lag a little; the
// provisioner's stop re-reads the record, so a stale decision costs a
// no-op stop at worst.
type records struct {
	mu     sync.RWMutex
	byID   map[string]messages.Session
	synced bool
}

func newRecords() *records { return &records{byID: map[string]messages.Session{}} }

// get returns the copy of one record and whether the copy is complete.
func (c *records) get(id string) (s messages.Session, found, synced bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, found = c.byID[id]
	return s, found, c.synced
}

// all returns every record, or false until the watch has synced.
func (c *records) all() ([]messages.Session, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.synced {
		return nil, false
	}
	out := make([]messages.Session, 0, len(c.byID))
	for _, s := range c.byID {
		out = append(out, s)
	}
	return out, true
}

func (c *records) apply(ch registry.Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case ch.Synced:
		c.synced = true
	case ch.Deleted:
		delete(c.byID, ch.ID)
	default:
		c.byID[ch.ID] = ch.Session
	}
}

// reset forgets everything when the watch must start over.
func (c *records) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byID = map[string]messages.Session{}
	c.synced = false
}

// watchRecords keeps r.records current until ctx ends.
func (r *Reaper) watchRecords(ctx context.Context) {
	for {
		err := r.reg.Watch(ctx, r.records.apply)
		if ctx.Err() != nil {
			return
		}
		r.records.reset()
		r.log.Warn("registry watch ended; restarting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// session returns the record a heartbeat is about: from the copy, or from
// the registry when the copy does not have it (a session newer than the
// watch, or one that is gone).
func (r *Reaper) session(ctx context.Context, id string) (messages.Session, error) {
	if s, ok, _ := r.records.get(id); ok {
		return s, nil
	}
	entry, err := r.reg.Get(ctx, id)
	if err != nil {
		return messages.Session{}, err
	}
	return entry.Session, nil
}
