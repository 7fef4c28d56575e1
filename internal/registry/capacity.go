package registry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrFull is returned by Reserve when every slot is taken.
var ErrFull = errors.New("no free session slot")

// A session limit of N is N slot keys, slot.0 to slot.N-1, each created
// only if absent and holding the id of the session that took it. The
// bucket's create-only write is atomic, so N racing spawns can never hold
// more than N slots: counting the records and then creating one let 4 or 5
// of 60 concurrent spawns through a limit of 3. slotof.<id> records which
// slot a session holds, so that any provisioner can free it in two reads.
const (
	slotPrefix   = "slot."
	slotOfPrefix = "slotof."
)

// Reservation is one taken slot.
type Reservation struct {
	Slot      int
	SessionID string
	// Taken is when the slot was taken, by the bucket's clock.
	Taken time.Time
	// Revision is the slot key's revision, for a release that must not
	// free a slot someone else has taken since.
	Revision uint64
}

// Reserve takes one of limit slots for the session id, or fails with ErrFull.
// Slots above limit, left by an earlier and larger limit, count as taken.
func (r *Registry) Reserve(ctx context.Context, id string, limit int) error {
	held, err := r.slotKeys(ctx)
	if err != nil {
		return err
	}
	if len(held) >= limit {
		return fmt.Errorf("%d of %d slots taken: %w", len(held), limit, ErrFull)
	}
	for i := range limit {
		if held[i] {
			continue
		}
		_, err := r.kv.Create(ctx, slotPrefix+strconv.Itoa(i), []byte(id))
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // Taken since the listing; try the next free one.
		}
		if err != nil {
			return fmt.Errorf("reserve a slot for %s: %w", id, err)
		}
		if _, err := r.kv.Put(ctx, slotOfPrefix+id, []byte(strconv.Itoa(i))); err != nil {
			// The slot stays taken until SweepReservations finds no record.
			return fmt.Errorf("record the slot of %s: %w", id, err)
		}
		return nil
	}
	return fmt.Errorf("all %d slots taken: %w", limit, ErrFull)
}

func (r *Registry) slotKeys(ctx context.Context) (map[int]bool, error) {
	lister, err := r.kv.ListKeysFiltered(ctx, slotPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("list session slots: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	held := map[int]bool{}
	for k := range lister.Keys() {
		if i, err := strconv.Atoi(strings.TrimPrefix(k, slotPrefix)); err == nil {
			held[i] = true
		}
	}
	return held, nil
}

// Release frees the slot held by the session id. Releasing an id that
// holds none succeeds, so every path that ends a session may call it.
func (r *Registry) Release(ctx context.Context, id string) error {
	e, err := r.kv.Get(ctx, slotOfPrefix+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release the slot of %s: %w", id, err)
	}
	slot, err := strconv.Atoi(string(e.Value()))
	if err == nil {
		if err := r.releaseSlot(ctx, slot, id); err != nil {
			return err
		}
	}
	err = r.kv.Purge(ctx, slotOfPrefix+id, jetstream.LastRevision(e.Revision()))
	if err != nil && !isWrongRevision(err) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("release the slot of %s: %w", id, err)
	}
	return nil
}

// releaseSlot frees slot if the session id still holds it.
func (r *Registry) releaseSlot(ctx context.Context, slot int, id string) error {
	e, err := r.kv.Get(ctx, slotPrefix+strconv.Itoa(slot))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release slot %d of %s: %w", slot, id, err)
	}
	if string(e.Value()) != id {
		return nil
	}
	err = r.kv.Purge(ctx, e.Key(), jetstream.LastRevision(e.Revision()))
	if err != nil && !isWrongRevision(err) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("release slot %d of %s: %w", slot, id, err)
	}
	return nil
}

// Reservations lists every taken slot.
func (r *Registry) Reservations(ctx context.Context) ([]Reservation, error) {
	held, err := r.slotKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Reservation, 0, len(held))
	for slot := range held {
		e, err := r.kv.Get(ctx, slotPrefix+strconv.Itoa(slot))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read slot %d: %w", slot, err)
		}
		out = append(out, Reservation{Slot: slot, SessionID: string(e.Value()), Taken: e.Created(), Revision: e.Revision()})
	}
	return out, nil
}

// SweepReservations frees the slots of sessions that have no record and
// took their slot more than grace ago: a provisioner that crashed between
// reserving and writing the record, or between deleting it and releasing.
// A slot taken within grace may belong to a spawn about to write its record.
// It returns the ids whose slots it freed.
func (r *Registry) SweepReservations(ctx context.Context, grace time.Duration) ([]string, error) {
	res, err := r.Reservations(ctx)
	if err != nil {
		return nil, err
	}
	var freed []string
	for _, s := range res {
		if time.Since(s.Taken) < grace {
			continue
		}
		if _, err := r.Get(ctx, s.SessionID); !errors.Is(err, ErrNotFound) {
			continue // Live, or unreadable: keep it rather than overshoot.
		}
		err := r.kv.Purge(ctx, slotPrefix+strconv.Itoa(s.Slot), jetstream.LastRevision(s.Revision))
		if err != nil && !isWrongRevision(err) && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return freed, fmt.Errorf("free slot %d of %s: %w", s.Slot, s.SessionID, err)
		}
		if err == nil {
			_ = r.kv.Purge(ctx, slotOfPrefix+s.SessionID)
			freed = append(freed, s.SessionID)
		}
	}
	return freed, nil
}
