package prober

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"hash/fnv"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/messages"
)

// Prober replicas split the sessions by rendezvous hashing over the live
// replicas. Each replica writes its id into a small KV bucket every beat
// and watches the bucket; a replica whose key was not written for a lapse
// is taken for dead. Every replica computes the same owner for a session
// from the same member list, with no coordinator and no message per
// session, and a change of members moves only the leaving or joining
// replica's share. A replica always counts itself, so a replica cut off
// from the bucket probes every session rather than none.

// membership is one prober's view of the live replicas.
type membership struct {
	self string
	// beat is how often this replica announces itself; lapse is how long
	// another may stay silent before it is dropped; grace is how long a
	// replica keeps probing the share it just handed over, so a joining
	// replica has probed it before the old owner stops.
	beat, lapse, grace time.Duration
	now                func() time.Time
	log                *slog.Logger

	mu   sync.Mutex
	seen map[string]time.Time
	// cur is the sorted live list last computed, prev the one before it,
	// which still counts until changedAt+grace.
	cur, prev []string
	changedAt time.Time
	gen       uint64
}

func newMembership(interval time.Duration, now func() time.Time, log *slog.Logger) *membership {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	self := sanitizeKey(host) + "-" + hex.EncodeToString(b[:])
	// A dead replica is dropped within half an interval, and its share is
	// probed at once by the new owners: the gap in a session's heartbeats
	// is at most the interval it was into, plus half an interval.
	return &membership{self: self, beat: max(interval/4, 10*time.Millisecond), lapse: max(interval/2, 20*time.Millisecond),
		grace: interval, now: now, log: log, seen: map[string]time.Time{}, cur: []string{self}, gen: 1}
}

// sanitizeKey keeps the characters a KV key may hold.
func sanitizeKey(s string) string {
	out := []byte(s)
	for i, c := range out {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			out[i] = '_'
		}
	}
	if len(out) == 0 {
		return "prober"
	}
	return string(out)
}

// open creates or opens the bucket, nil if it cannot.
func (m *membership) open(ctx context.Context, nc *nats.Conn, subj messages.Subjects, replicas int) jetstream.KeyValue {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil
	}
	octx, cancel := context.WithTimeout(ctx, m.lapse)
	defer cancel()
	kv, err := bus.EnsureMembers(octx, js, subj, replicas)
	if err != nil {
		return nil
	}
	return kv
}

// join creates the bucket, announces this replica and reads who else is
// there, giving up after a few seconds: a prober that cannot reach the
// bucket probes every session alone.
func (m *membership) join(ctx context.Context, nc *nats.Conn, subj messages.Subjects, replicas int) (jetstream.KeyValue, jetstream.KeyWatcher) {
	js, err := jetstream.New(nc)
	if err != nil {
		m.log.Warn("prober membership off", "err", err)
		return nil, nil
	}
	jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := bus.EnsureMembers(jctx, js, subj, replicas)
	if err == nil {
		_, err = kv.Put(jctx, m.self, nil)
	}
	if err != nil {
		m.log.Warn("prober membership: probing every session until the bucket is reachable", "err", err)
		return nil, nil
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		m.log.Warn("prober membership: probing every session", "err", err)
		return kv, nil
	}
	// The replay: keys of dead replicas are there too, so each counts as
	// seen just long enough for a live one to write again.
	replayed := m.now().Add(-m.lapse + m.beat + m.beat/2)
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				m.view()
				return kv, w
			}
			m.apply(e, replayed)
		case <-jctx.Done():
			return kv, w
		}
	}
}

// run keeps this replica announced and the view current until ctx is
// done, then withdraws it so the others take its share at once.
func (m *membership) run(ctx context.Context, nc *nats.Conn, subj messages.Subjects, replicas int,
	kv jetstream.KeyValue, w jetstream.KeyWatcher) {
	t := time.NewTicker(m.beat)
	defer t.Stop()
	var updates <-chan jetstream.KeyValueEntry
	if w != nil {
		updates = w.Updates()
	}
	defer func() {
		if w != nil {
			_ = w.Stop()
		}
	}()
	failing := false
	for {
		select {
		case <-ctx.Done():
			if kv != nil {
				dctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = kv.Delete(dctx, m.self)
				cancel()
			}
			return
		case e, ok := <-updates:
			if !ok {
				// The watch ended under us; watch again at the next beat.
				updates = nil
				continue
			}
			if e != nil {
				m.apply(e, m.now())
			}
		case <-t.C:
			if kv == nil {
				// The bucket was unreachable at start: keep trying.
				if kv = m.open(ctx, nc, subj, replicas); kv == nil {
					continue
				}
				m.log.Info("prober membership: joined", "member", m.self)
			}
			if updates == nil {
				if nw, err := kv.WatchAll(ctx); err == nil {
					if w != nil {
						_ = w.Stop()
					}
					w, updates = nw, nw.Updates()
				}
			}
			pctx, cancel := context.WithTimeout(ctx, m.lapse)
			_, err := kv.Put(pctx, m.self, nil)
			cancel()
			if err != nil && !failing && ctx.Err() == nil {
				m.log.Warn("prober membership: announce failed", "err", err)
			}
			failing = err != nil
		}
	}
}

func (m *membership) apply(e jetstream.KeyValueEntry, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.Key() == m.self {
		return
	}
	if e.Operation() == jetstream.KeyValuePut {
		m.seen[e.Key()] = at
	} else {
		delete(m.seen, e.Key())
	}
}

// view returns the live replicas, the list before the last change while
// its grace lasts (else nil), and a number that changes with the list.
func (m *membership) view() (cur, prev []string, gen uint64) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	live := []string{m.self}
	for id, at := range m.seen {
		if now.Sub(at) < m.lapse {
			live = append(live, id)
		} else {
			delete(m.seen, id)
		}
	}
	slices.Sort(live)
	if !slices.Equal(live, m.cur) {
		m.prev, m.cur, m.changedAt = m.cur, live, now
		m.gen++
	}
	if now.Sub(m.changedAt) < m.grace {
		prev = m.prev
	}
	return m.cur, prev, m.gen
}

// owner is the member with the highest hash of (member, session): every
// replica with the same list picks the same one, and dropping a member
// moves only the sessions it owned.
func owner(members []string, id string) string {
	var best string
	var top uint64
	for _, mem := range members {
		h := fnv.New64a()
		_, _ = h.Write([]byte(mem))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(id))
		if v := mix(h.Sum64()); best == "" || v > top {
			best, top = mem, v
		}
	}
	return best
}

// mix spreads FNV's output over all bits, so that ids which differ in
// their last characters do not favour one member.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb3f99e5e5ac6
	x ^= x >> 33
	return x
}
