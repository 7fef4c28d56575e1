// Package prober polls every ready session's /status and publishes what it
// learns as heartbeats, which the reaper reads from JetStream.
package prober

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// Config holds the prober's settings.
type Config struct {
	settings.Layout
	// Probing is how often each session is probed, as the gateway reports.
	settings.Probing
	Timeout     time.Duration `envconfig:"PROBE_TIMEOUT" default:"2s" desc:"one probe's time limit"`
	Concurrency int           `envconfig:"PROBE_CONCURRENCY" default:"256" desc:"probes in flight at once"`
	// Replication is the membership bucket's, as for every stream and bucket.
	settings.Replication
}

// Deps are what a prober works with besides its settings.
type Deps struct {
	// NATS carries heartbeats, activity reports and the registry watch.
	NATS *nats.Conn
	// Registry is where the prober finds its targets.
	Registry *registry.Registry
	// Now is the prober's clock; nil is time.Now.
	Now func() time.Time
	// Log receives the prober's messages; nil discards them.
	Log *slog.Logger
	// Metrics records probe latency and failures; nil records nothing.
	Metrics *metrics.Metrics
	// Cache is a registry copy shared with the process's other components,
	// which the process keeps current; nil makes the prober keep its own.
	Cache *registry.Cache
}

// Prober keeps its targets from a registry cache and probes them.
type Prober struct {
	cfg Config
	nc  *nats.Conn
	// cache is the registry's copy the targets follow.
	cache *registry.Cache
	// ownCache says the prober runs its cache; a shared one is run by the
	// process.
	ownCache bool
	// conns bounds the connections kept to targets between probes.
	conns *connBudget
	// starvedAt is when a probe last failed for want of the prober's own
	// resources, in Unix nanoseconds, so that it is logged once a minute.
	starvedAt atomic.Int64
	log       *slog.Logger
	now       func() time.Time
	mx        *metrics.Metrics
	subj      messages.Subjects

	mu      sync.Mutex
	targets map[string]*target
	// bySlot indexes targets by slot, and urgent holds the ones taken over
	// and not yet probed, so that a tick looks at its own slot's targets:
	// scanning every target 50 times an interval was a cost each replica
	// paid for all sessions, not for its share, and kept 3 sharded probers
	// at 0.45x of one alone instead of 1/3 (BENCHMARKS.md).
	bySlot []map[string]*target
	urgent map[string]*target
	// activity is the gateways' view of sessions with the proxy source.
	activity *activityBook
	// started bounds a session's idle time from below: what the gateways
	// reported before this prober ran is unknown to it.
	started time.Time
	// members is who else probes; each session is probed by its owner.
	members *membership
	// view is the member list the targets' owned flags were computed
	// from, and viewGen its generation (0: none yet).
	view    []string
	viewGen uint64
}

type target struct {
	statusURL string
	// client polls statusURL; it is nil when the proxy is the session's
	// only activity source.
	client       *statusClient
	proxy        bool
	since        time.Time
	failingSince time.Time
	probing      bool
	// slot is the part of the interval in which the target is probed.
	slot int
	// owned says this replica owns the session under the current view;
	// urgent asks for a probe at the next tick, for a session taken over
	// from a replica that died or about to cross its idle timeout.
	owned, urgent bool
	// idleTimeout is the session's; crossing, when set, makes the target
	// urgent as the session crosses it (see scheduleCrossing).
	idleTimeout time.Duration
	crossing    *time.Timer
}

// maxSlots and minSlot spread probes over the interval instead of sending
// every probe at each tick: at 10,000 sessions the burst outlasted the
// interval, so some targets missed rounds and reaping lagged by rounds.
const (
	maxSlots = 50
	minSlot  = 20 * time.Millisecond
)

// slots is how many parts the interval is split into.
func (p *Prober) slots() int { return max(1, min(maxSlots, int(p.cfg.ProbeInterval/minSlot))) }

// slotOf spreads targets over the slots by their random ids.
func (p *Prober) slotOf(id string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % uint32(p.slots()))
}

// New builds a prober from its settings and its dependencies.
func New(cfg Config, deps Deps) (*Prober, error) {
	subj, err := messages.NewPoolSubjects(cfg.Prefix, cfg.Pool)
	if err != nil {
		return nil, err
	}
	// The defaults live in the tags; a zero here is a mistake to report.
	if cfg.ProbeInterval <= 0 || cfg.Timeout <= 0 || cfg.Concurrency < 1 {
		return nil, fmt.Errorf("probe interval, timeout and concurrency must be positive")
	}
	now, log := deps.Now, deps.Log
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Prober{
		cfg: cfg, nc: deps.NATS, now: now, mx: deps.Metrics, subj: subj, log: log.With("component", "prober"),
		targets: map[string]*target{}, urgent: map[string]*target{},
		activity: newActivityBook(cfg.ProbeInterval), started: now(),
	}
	p.bySlot = make([]map[string]*target, p.slots())
	for i := range p.bySlot {
		p.bySlot[i] = map[string]*target{}
	}
	p.members = newMembership(cfg.ProbeInterval, now, p.log)
	p.conns = newConnBudget(cfg.Concurrency)
	p.cache, p.ownCache = deps.Cache, deps.Cache == nil
	if p.ownCache {
		p.cache = registry.NewCache(deps.Registry, deps.NATS, p.log)
	}
	p.cache.OnChange(p.applyChange)
	return p, nil
}

// Run probes until ctx is done and returns nil then.
func (p *Prober) Run(ctx context.Context) error {
	actSub, err := p.nc.Subscribe(p.subj.Activity(), func(m *nats.Msg) { p.activity.record(m, p.probes) })
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", p.subj.Activity(), err)
	}
	defer func() { _ = actSub.Unsubscribe() }()
	watchErr := make(chan error, 1)
	if p.ownCache {
		go func() { watchErr <- p.cache.Run(ctx) }()
	}
	kv, w := p.members.join(ctx, p.nc, p.subj, p.cfg.Replicas)
	var members sync.WaitGroup
	members.Go(func() { p.members.run(ctx, p.nc, p.subj, p.cfg.Replicas, kv, w) })
	// Withdrawn from the bucket before Run returns, while NATS is up.
	defer members.Wait()
	slots := p.slots()
	t := time.NewTicker(p.cfg.ProbeInterval / time.Duration(slots))
	defer t.Stop()
	defer p.closeClients()
	sem := make(chan struct{}, p.cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	p.log.Info("prober started", "interval", p.cfg.ProbeInterval, "member", p.members.self)
	for slot := 0; ; slot = (slot + 1) % slots {
		select {
		case <-ctx.Done():
			return nil
		case err := <-watchErr:
			return err
		case <-t.C:
		}
		for id, tg := range p.due(slot) {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Go(func() {
				defer func() { <-sem }()
				p.probe(ctx, id, tg)
			})
		}
	}
}

// due returns the targets of slot that this replica owns (or just handed
// over, see membership.grace) and the ones it just took over, not already
// being probed, so a slow target is never probed twice at once.
// due returns copies, because the watch may change a target while it is
// being probed.
func (p *Prober) due(slot int) map[string]target {
	cur, prev, gen := p.members.view()
	self := p.members.self
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.viewGen {
		for id, t := range p.targets {
			owned := owner(cur, id) == self
			// The first view takes nothing over: the sessions are new to
			// this replica and wait for their slot.
			if owned && !t.owned && p.viewGen != 0 {
				t.urgent = true
				p.urgent[id] = t
			}
			t.owned = owned
		}
		p.view, p.viewGen = cur, gen
	}
	out := make(map[string]target, len(p.bySlot[slot])/len(cur)+len(p.urgent)+1)
	take := func(id string, t *target) {
		t.probing, t.urgent = true, false
		delete(p.urgent, id)
		out[id] = *t
	}
	for id, t := range p.urgent {
		if !t.probing {
			take(id, t)
		}
	}
	for id, t := range p.bySlot[slot] {
		if !t.probing && (t.owned || prev != nil && owner(prev, id) == self) {
			take(id, t)
		}
	}
	return out
}

// probes reports whether the session is one of this prober's targets with
// the proxy among its sources.
func (p *Prober) probes(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.targets[id]
	return ok && t.proxy
}

// applyChange keeps one target per ready session that has a status URL or
// takes its activity from the proxy.
func (p *Prober) applyChange(c registry.Change) {
	if c.Synced {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := c.Session
	if c.Deleted || s.Status != messages.StatusReady || (s.StatusURL == "" && !s.ProxyActivity) {
		if t, ok := p.targets[c.ID]; ok {
			t.client.close()
			t.stopCrossing()
			delete(p.targets, c.ID)
			delete(p.bySlot[t.slot], c.ID)
			delete(p.urgent, c.ID)
			p.activity.forget(c.ID)
		}
		return
	}
	t, ok := p.targets[c.ID]
	if !ok {
		t = &target{slot: p.slotOf(c.ID), owned: owner(p.view, c.ID) == p.members.self}
		p.targets[c.ID] = t
		p.bySlot[t.slot][c.ID] = t
	}
	if !ok || t.statusURL != s.StatusURL {
		t.client.close()
		t.statusURL, t.client = s.StatusURL, nil
		if s.StatusURL != "" {
			t.client = newStatusClient(s.StatusURL, p.cfg, p.conns)
		}
	}
	// Idle time counts from when the session became usable: ready, or
	// claimed from the warm pool.
	t.proxy, t.since, t.idleTimeout = s.ProxyActivity, s.ReadyAt, time.Duration(s.IdleTimeoutSeconds)*time.Second
	if s.ClaimedAt.After(t.since) {
		t.since = s.ClaimedAt
	}
}

func (p *Prober) probe(ctx context.Context, id string, tg target) {
	start := p.now()
	var st messages.AppStatus
	var err error
	if tg.client != nil {
		st, err = tg.client.fetch(p.cfg.Timeout)
	}
	took := p.now().Sub(start)
	if err != nil && localFailure(err) {
		// Not the app's failure: no heartbeat, rather than one that would
		// count towards ending a healthy session as unhealthy.
		p.mu.Lock()
		if t := p.targets[id]; t != nil {
			t.probing = false
		}
		p.mu.Unlock()
		if last := p.starvedAt.Load(); start.UnixNano()-last > int64(time.Minute) && p.starvedAt.CompareAndSwap(last, start.UnixNano()) {
			p.log.Warn("probes fail for want of the prober's own resources; raise its open-file limit", "err", err)
		}
		return
	}
	hb := messages.Heartbeat{SessionID: id, Time: start.UTC(), LatencySeconds: took.Seconds()}
	if ctx.Err() == nil && tg.client != nil {
		p.mx.Probed(took, err != nil)
	}
	p.mu.Lock()
	t := p.targets[id]
	if t != nil {
		t.probing = false
		if err != nil && t.failingSince.IsZero() {
			t.failingSince = start.UTC()
		}
		if err == nil {
			t.failingSince = time.Time{}
		}
		hb.FailingSince = t.failingSince
	}
	p.mu.Unlock()
	if t == nil || ctx.Err() != nil {
		return // The session ended while we probed it.
	}
	if err != nil {
		hb.Error = err.Error()
	} else {
		hb.OK, hb.ActiveConnections, hb.SecondsInactive, hb.Listening = true, st.ActiveConnections, st.SecondsInactive, st.Listening
	}
	if tg.proxy {
		since := tg.since
		if p.started.After(since) {
			since = p.started
		}
		open, last := p.activity.view(id, since, start)
		mergeProxy(&hb, tg.client != nil, open, last, start)
	}
	data, _ := json.Marshal(hb)
	if err := p.nc.Publish(p.subj.Heartbeat(id), data); err != nil {
		p.log.Warn("publish heartbeat", "session_id", id, "err", err)
	}
	if hb.OK && tg.idleTimeout > 0 {
		// The app counts whole seconds, so it is idle at least this much
		// longer than it says; past that, it has crossed if still idle.
		if left := tg.idleTimeout - time.Duration(hb.SecondsInactive)*time.Second; left > 0 && left+took < p.cfg.ProbeInterval {
			p.scheduleCrossing(id, start.Add(took+left))
		}
	}
}

// scheduleCrossing has the session probed again at at, when it crosses
// its idle timeout if it stays idle, rather than at its next turn: the
// reaper then ends it within a tick and the heartbeat's way of its
// timeout, not up to a whole interval later. Reap latency p99 was the
// interval plus the pipeline, 5.0 s at 1,000 and 10,000 sessions and
// 6.8-15 s at 30,000 with 5 s probes (BENCHMARKS.md); a session costs at
// most one extra probe each time it goes idle.
func (p *Prober) scheduleCrossing(id string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.targets[id]
	if t == nil {
		return // The session ended while we probed it.
	}
	t.stopCrossing()
	t.crossing = time.AfterFunc(at.Sub(p.now()), func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.targets[id] == t && t.owned && !t.probing && !t.urgent {
			t.urgent = true
			p.urgent[id] = t
		}
	})
}

func (t *target) stopCrossing() {
	if t.crossing != nil {
		t.crossing.Stop()
		t.crossing = nil
	}
}
