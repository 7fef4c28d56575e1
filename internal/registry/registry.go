// Package registry keeps session records in a JetStream key-value bucket.
// The bucket is the truth about every session; the proxy's routes, the
// API's list, the prober's targets and the reaper's view are copies kept
// by a Cache. The bucket's size follows the live sessions: a purge's
// marker expires with the bucket's marker TTL (bus.Ensure sets it).
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/messages"
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("session not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("record changed concurrently")
)

const (
	sessionPrefix = "s."
	keyPrefix     = "k."
)

// Registry is the typed view of the session bucket.
type Registry struct {
	kv jetstream.KeyValue
	// markerTTL is the bucket's LimitMarkerTTL, read once: -1 until known,
	// 0 on a bucket without marker TTLs.
	markerTTL atomic.Int64
}

// New wraps a bucket made by bus.Ensure.
func New(kv jetstream.KeyValue) *Registry {
	r := &Registry{kv: kv}
	r.markerTTL.Store(-1)
	return r
}

// Entry is a session record and the revision it was read at, for
// compare-and-swap updates.
type Entry struct {
	Session  messages.Session
	Revision uint64
}

// Get reads one session record.
func (r *Registry) Get(ctx context.Context, id string) (Entry, error) {
	if !messages.ValidSessionID(id) {
		return Entry{}, ErrNotFound
	}
	e, err := r.kv.Get(ctx, sessionPrefix+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("get session %s: %w", id, err)
	}
	return decodeEntry(e)
}

func decodeEntry(e jetstream.KeyValueEntry) (Entry, error) {
	var s messages.Session
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return Entry{}, fmt.Errorf("decode session %s: %w", e.Key(), err)
	}
	return Entry{Session: s, Revision: e.Revision()}, nil
}

// Create stores a new record and fails with ErrExists if the id is taken.
func (r *Registry) Create(ctx context.Context, s messages.Session) (uint64, error) {
	data, err := json.Marshal(s)
	if err != nil {
		return 0, fmt.Errorf("encode session %s: %w", s.ID, err)
	}
	rev, err := r.kv.Create(ctx, sessionPrefix+s.ID, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("create session %s: %w", s.ID, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("create session %s: %w", s.ID, err)
	}
	return rev, nil
}

// Update replaces a record if it is still at revision, else ErrConflict.
func (r *Registry) Update(ctx context.Context, s messages.Session, revision uint64) (uint64, error) {
	data, err := json.Marshal(s)
	if err != nil {
		return 0, fmt.Errorf("encode session %s: %w", s.ID, err)
	}
	rev, err := r.kv.Update(ctx, sessionPrefix+s.ID, data, revision)
	if isWrongRevision(err) {
		return 0, fmt.Errorf("update session %s: %w", s.ID, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("update session %s: %w", s.ID, err)
	}
	return rev, nil
}

// Delete removes a record. A revision of 0 deletes whatever is there; any
// other deletes only that revision. Deleting a missing record succeeds.
func (r *Registry) Delete(ctx context.Context, id string, revision uint64) error {
	opts := r.purgeOpts(ctx)
	if revision != 0 {
		opts = append(opts, jetstream.LastRevision(revision))
	}
	err := r.kv.Purge(ctx, sessionPrefix+id, opts...)
	if isWrongRevision(err) {
		return fmt.Errorf("delete session %s: %w", id, ErrConflict)
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	return nil
}

// purgeOpts gives a purge's marker the bucket's marker TTL. A purge
// leaves one marker, and session ids are random, so markers are never
// overwritten: without a TTL the bucket kept one per session ever spawned
// (1,000 create+purge left 1,000 entries, all replayed by every new watch).
// The marker outlives the record long enough for every live watch to see
// the delete, then the server removes it.
func (r *Registry) purgeOpts(ctx context.Context) []jetstream.KVDeleteOpt {
	ttl := r.markerTTL.Load()
	if ttl < 0 {
		st, err := r.kv.Status(ctx)
		if err != nil {
			return nil // Purge without a TTL this once; bus.Ensure clears such markers.
		}
		ttl = int64(st.LimitMarkerTTL())
		r.markerTTL.Store(ttl)
	}
	if ttl == 0 {
		return nil // A bucket without TTLs refuses a purge with one.
	}
	return []jetstream.KVDeleteOpt{jetstream.PurgeTTL(time.Duration(ttl))}
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return err != nil && strings.Contains(err.Error(), "wrong last sequence")
}

// keyName maps a user's key, which may hold any UTF-8, onto the bucket's
// narrow key alphabet.
func keyName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return keyPrefix + hex.EncodeToString(sum[:])
}

// ClaimKey atomically binds key to id. If the key is already bound it
// returns the bound session's id and ErrExists, so two racing spawns with
// one key end with one session.
func (r *Registry) ClaimKey(ctx context.Context, key, id string) (string, error) {
	_, err := r.kv.Create(ctx, keyName(key), []byte(id))
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return "", fmt.Errorf("claim key: %w", err)
	}
	e, err := r.kv.Get(ctx, keyName(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Released between our create and get: try once more.
		if _, err := r.kv.Create(ctx, keyName(key), []byte(id)); err == nil {
			return id, nil
		}
		return "", fmt.Errorf("claim key: %w", ErrConflict)
	}
	if err != nil {
		return "", fmt.Errorf("claim key: %w", err)
	}
	return string(e.Value()), ErrExists
}

// ReleaseKey unbinds key, but only while it is still bound to id, so a
// late release never frees a newer session's key.
func (r *Registry) ReleaseKey(ctx context.Context, key, id string) error {
	if key == "" {
		return nil
	}
	e, err := r.kv.Get(ctx, keyName(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release key of %s: %w", id, err)
	}
	if string(e.Value()) != id {
		return nil
	}
	err = r.kv.Purge(ctx, keyName(key), append(r.purgeOpts(ctx), jetstream.LastRevision(e.Revision()))...)
	if err != nil && !isWrongRevision(err) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("release key of %s: %w", id, err)
	}
	return nil
}
