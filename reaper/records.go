package reaper

import (
	"context"

	"github.com/spawnerhq/spawner/messages"
)

// session returns the record a heartbeat is about: from the registry
// cache, or from the registry when the cache does not have it (a session
// newer than the watch, or one that is gone). Reading the cache rather
// than the bucket matters: at 10,000 sessions the reads were a third of
// the reaper's CPU and queued behind the bucket's writes. The copy may
// lag a little; the provisioner's stop re-reads the record, so a stale
// decision costs a no-op stop at worst.
func (r *Reaper) session(ctx context.Context, id string) (messages.Session, error) {
	if s, ok := r.cache.Get(id); ok {
		return s, nil
	}
	entry, err := r.reg.Get(ctx, id)
	if err != nil {
		return messages.Session{}, err
	}
	return entry.Session, nil
}
