package registry

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/messages"
)

// Change is one update seen by Watch.
type Change struct {
	// ID is the session's id; Session is zero when Deleted.
	ID      string
	Session messages.Session
	Deleted bool
	// Synced is set on a single Change with no session, sent once the
	// records that existed when the watch began have all been delivered.
	Synced bool
}

// Watch calls fn for every session record that exists, then for every
// change, until ctx is done. fn runs on one goroutine, in order.
func (r *Registry) Watch(ctx context.Context, fn func(Change)) error {
	w, err := r.kv.WatchFiltered(ctx, []string{sessionPrefix + "*"})
	if err != nil {
		return fmt.Errorf("watch sessions: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch sessions: closed")
			}
			if e == nil {
				fn(Change{Synced: true})
				continue
			}
			id := strings.TrimPrefix(e.Key(), sessionPrefix)
			if e.Operation() != jetstream.KeyValuePut {
				fn(Change{ID: id, Deleted: true})
				continue
			}
			entry, err := decodeEntry(e)
			if err != nil {
				continue // A record we cannot read cannot be routed; Get reports it.
			}
			fn(Change{ID: id, Session: entry.Session})
		}
	}
}

// List returns every session record.
func (r *Registry) List(ctx context.Context) ([]Entry, error) {
	w, err := r.kv.WatchFiltered(ctx, []string{sessionPrefix + "*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer w.Stop()
	var out []Entry
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list sessions: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				return out, nil
			}
			if entry, err := decodeEntry(e); err == nil {
				out = append(out, entry)
			}
		}
	}
}

// Await waits until the session is past creating and returns it, or
// ErrNotFound once it is gone.
func (r *Registry) Await(ctx context.Context, id string) (messages.Session, error) {
	w, err := r.kv.Watch(ctx, sessionPrefix+id)
	if err != nil {
		return messages.Session{}, fmt.Errorf("watch session %s: %w", id, err)
	}
	defer w.Stop()
	seen := false
	for {
		select {
		case <-ctx.Done():
			return messages.Session{}, fmt.Errorf("wait for session %s: %w", id, ctx.Err())
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return messages.Session{}, fmt.Errorf("watch session %s: closed", id)
			case e == nil:
				if !seen {
					return messages.Session{}, ErrNotFound
				}
			case e.Operation() != jetstream.KeyValuePut:
				return messages.Session{}, ErrNotFound
			default:
				seen = true
				entry, err := decodeEntry(e)
				if err != nil {
					return messages.Session{}, err
				}
				if entry.Session.Status != messages.StatusCreating {
					return entry.Session, nil
				}
			}
		}
	}
}

// Count returns how many session records exist.
func (r *Registry) Count(ctx context.Context) (int, error) {
	lister, err := r.kv.ListKeysFiltered(ctx, sessionPrefix+"*")
	if err != nil {
		return 0, fmt.Errorf("count sessions: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	n := 0
	for range lister.Keys() {
		n++
	}
	return n, nil
}
