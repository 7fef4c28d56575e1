package registry

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/messages"
)

// The watch restarts after minBackoff, doubling up to maxBackoff while
// NATS stays away, so a long outage costs a retry every few seconds rather
// than one a second from every component.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// resyncEvery is how often the cache replays the bucket even though its
// watch seems fine. A watch rides out a NATS restart by resuming where it
// was, but only once its heartbeats are missed (measured: 20 s after the
// server was back), and the deletes of a gap longer than bus.MarkerTTL
// reach it as nothing at all: their markers are gone. So the cache also
// replays at once when its connection reconnects, and this is the net
// under both.
const resyncEvery = 5 * time.Minute

// Cache is a copy of every session record, kept current by a watch: the
// proxy's routes, the prober's targets, the reaper's view and the API's
// list all read it instead of the bucket. When the watch ends (NATS went
// away) it restarts with backoff; the new watch replays the bucket, and
// records that were deleted while the watch was down are removed at
// synced, so the copy never keeps a session that ended.
type Cache struct {
	reg *Registry
	nc  *nats.Conn
	log *slog.Logger

	mu       sync.RWMutex
	byID     map[string]messages.Session
	synced   bool
	syncedCh chan struct{}
	syncOnce sync.Once

	// dispatch orders handler calls: the watch and OnChange's replay never
	// interleave, so each handler sees one consistent sequence.
	dispatch sync.Mutex
	handlers []func(Change)
	// seen holds the ids a restarted watch has delivered so far; nil once
	// it has synced.
	seen   map[string]bool
	resync chan struct{}
	// changed is closed and replaced whenever the copy changes, so that
	// Await can wait for a change without a handler of its own.
	changed chan struct{}
}

// NewCache returns an empty cache of reg; Run fills it. nc is the
// connection under reg, watched for reconnects; nil watches nothing.
func NewCache(reg *Registry, nc *nats.Conn, log *slog.Logger) *Cache {
	return &Cache{reg: reg, nc: nc, log: log, byID: map[string]messages.Session{},
		syncedCh: make(chan struct{}), resync: make(chan struct{}, 1), changed: make(chan struct{})}
}

// OnChange makes fn see every change the cache applies, on the watch's
// goroutine and in order, after the copy has it. fn first gets the
// records the cache already holds (and Synced if it has synced), so it may
// be added before or after Run starts. A restart's removals arrive as
// Deleted changes. fn must not call OnChange.
func (c *Cache) OnChange(fn func(Change)) {
	c.dispatch.Lock()
	defer c.dispatch.Unlock()
	c.mu.RLock()
	now := make([]messages.Session, 0, len(c.byID))
	for _, s := range c.byID {
		now = append(now, s)
	}
	synced := c.synced
	c.mu.RUnlock()
	for _, s := range now {
		fn(Change{ID: s.ID, Session: s})
	}
	if synced {
		fn(Change{Synced: true})
	}
	c.handlers = append(c.handlers, fn)
}

// Resync makes the cache replay the bucket now and drop what is gone,
// while it goes on serving the copy it has.
func (c *Cache) Resync() {
	select {
	case c.resync <- struct{}{}:
	default:
	}
}

// LeaderElected is the advisory subject on which a NATS cluster announces
// a new leader of the bucket's stream; components that watch the bucket
// need leave to subscribe to it.
func LeaderElected(bucket string) string {
	return "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.KV_" + bucket
}

// Run keeps the cache current until ctx is done, and returns nil then.
func (c *Cache) Run(ctx context.Context) error {
	if c.nc != nil {
		go c.resyncOnReconnect(ctx)
		c.resyncOnNewLeader(ctx)
	}
	backoff := minBackoff
	for {
		c.dispatch.Lock()
		c.seen = map[string]bool{}
		c.dispatch.Unlock()
		watchCtx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(resyncEvery, cancel)
		go func() {
			select {
			case <-c.resync:
				cancel()
			case <-watchCtx.Done():
			}
		}()
		err := c.reg.Watch(watchCtx, c.apply)
		resyncing := watchCtx.Err() != nil
		timer.Stop()
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if resyncing {
			continue // The copy stays served, and synced, while it is replayed.
		}
		c.mu.Lock()
		if c.synced {
			backoff = minBackoff // This watch worked; the next failure starts over.
		}
		c.synced = false
		c.mu.Unlock()
		c.log.Warn("registry watch ended; restarting", "err", err, "after", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// resyncOnReconnect polls the connection's reconnect count rather than
// taking its reconnect handler, which bus.Connect already uses for logs.
func (c *Cache) resyncOnReconnect(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	seen := c.nc.Stats().Reconnects
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := c.nc.Stats().Reconnects; n != seen && c.nc.IsConnected() {
			seen = n
			c.log.Info("nats reconnected; replaying the registry")
			c.Resync()
		}
	}
}

// resyncOnNewLeader replays the bucket when its stream elects a new
// leader. The watch's consumer lived with the old one: a watch on a
// connection to a surviving server sees no reconnect, and found its
// consumer gone only when idle heartbeats went missing, about 5 s in
// which no change reached the copy. In the cluster fault suite that left
// sessions created just after the leader's kill unprobed for 5.1 s.
func (c *Cache) resyncOnNewLeader(ctx context.Context) {
	subject := LeaderElected(c.reg.kv.Bucket())
	sub, err := c.nc.Subscribe(subject, func(*nats.Msg) {
		c.log.Info("the session bucket has a new leader; replaying the registry")
		c.Resync()
	})
	if err != nil {
		c.log.Warn("cannot follow the session bucket's leader; a new leader is seen by the watch's heartbeats only", "subject", subject, "err", err)
		return
	}
	context.AfterFunc(ctx, func() { _ = sub.Unsubscribe() })
}

func (c *Cache) apply(ch Change) {
	c.dispatch.Lock()
	defer c.dispatch.Unlock()
	var out []Change
	emit := true
	c.mu.Lock()
	switch {
	case ch.Synced:
		for id := range c.byID {
			if c.seen != nil && !c.seen[id] {
				delete(c.byID, id)
				out = append(out, Change{ID: id, Deleted: true})
			}
		}
		c.seen = nil
		c.synced = true
		c.syncOnce.Do(func() { close(c.syncedCh) })
	case ch.Deleted:
		_, had := c.byID[ch.ID]
		// A replayed marker of a record the copy never had tells nobody
		// anything; at most a minute of them are left (bus.MarkerTTL).
		emit = had || c.seen == nil
		delete(c.byID, ch.ID)
	default:
		c.byID[ch.ID] = ch.Session
		if c.seen != nil {
			c.seen[ch.ID] = true
		}
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	if emit {
		out = append(out, ch)
	}
	for _, o := range out {
		for _, fn := range c.handlers {
			fn(o)
		}
	}
}

// Get returns the cached record of id.
func (c *Cache) Get(id string) (messages.Session, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.byID[id]
	return s, ok
}

// Await waits until cond holds for the cached record of id (ok is false
// when the copy has none), and reports whether it did before ctx ended.
// The API answers a write only once its own copy shows it: a client that
// spawns and then lists must see what it spawned, and the watch trails
// the write that the provisioner answered after by a moment (measured:
// one "sessions ls" in five, run at once after "sessions new", still saw
// the session creating). It returns once the cache's handlers have had
// the change too, for the views they keep.
func (c *Cache) Await(ctx context.Context, id string, cond func(s messages.Session, ok bool) bool) bool {
	for {
		c.mu.RLock()
		s, ok := c.byID[id]
		done, changed := cond(s, ok), c.changed
		c.mu.RUnlock()
		if done {
			// The change that met cond is in the copy before the
			// handlers hear of it; once dispatch is free they have, so
			// what they keep (the gateway's session list) answers a
			// client that reads right after, as the copy does.
			c.dispatch.Lock()
			c.dispatch.Unlock()
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// List returns every cached record, and whether the copy is complete: it
// is not before the first sync, nor while a restarted watch replays.
func (c *Cache) List() ([]messages.Session, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]messages.Session, 0, len(c.byID))
	for _, s := range c.byID {
		out = append(out, s)
	}
	return out, c.synced
}

// Len returns how many records the cache holds.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.byID)
}

// IsSynced reports whether the copy is complete now.
func (c *Cache) IsSynced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.synced
}

// Synced is closed once the first watch has delivered every record.
func (c *Cache) Synced() <-chan struct{} { return c.syncedCh }
