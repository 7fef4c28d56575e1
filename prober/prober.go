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
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// Config holds the prober's settings.
type Config struct {
	Prefix      string        `envconfig:"PREFIX" default:"spawner" desc:"prefix of every subject, stream and bucket"`
	Interval    time.Duration `envconfig:"PROBE_INTERVAL" default:"5s" desc:"how often each session's /status is polled"`
	Timeout     time.Duration `envconfig:"PROBE_TIMEOUT" default:"2s" desc:"one probe's time limit"`
	Concurrency int           `envconfig:"PROBE_CONCURRENCY" default:"256" desc:"probes in flight at once"`
	// Metrics records probe latency and failures; nil records nothing.
	Metrics *metrics.Metrics `ignored:"true"`
}

// Prober keeps its targets from a registry watch and probes them.
type Prober struct {
	cfg  Config
	nc   *nats.Conn
	reg  *registry.Registry
	log  *slog.Logger
	now  func() time.Time
	subj messages.Subjects

	mu      sync.Mutex
	targets map[string]*target
}

type target struct {
	statusURL    string
	client       *statusClient
	failingSince time.Time
	probing      bool
	// slot is the part of the interval in which the target is probed.
	slot int
}

// maxSlots and minSlot spread probes over the interval instead of sending
// every probe at each tick: at 10,000 sessions the burst outlasted the
// interval, so some targets missed rounds and reaping lagged by rounds.
const (
	maxSlots = 50
	minSlot  = 20 * time.Millisecond
)

// slots is how many parts the interval is split into.
func (p *Prober) slots() int { return max(1, min(maxSlots, int(p.cfg.Interval/minSlot))) }

// slotOf spreads targets over the slots by their random ids.
func (p *Prober) slotOf(id string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % uint32(p.slots()))
}

// New builds a prober; now is its clock.
func New(cfg Config, nc *nats.Conn, reg *registry.Registry, now func() time.Time, log *slog.Logger) (*Prober, error) {
	subj, err := messages.NewSubjects(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 || cfg.Timeout <= 0 {
		return nil, fmt.Errorf("probe interval and timeout must be positive")
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	return &Prober{
		cfg: cfg, nc: nc, reg: reg, now: now, subj: subj, log: log.With("component", "prober"),
		targets: map[string]*target{},
	}, nil
}

// Run probes until ctx is done and returns nil then.
func (p *Prober) Run(ctx context.Context) error {
	watchErr := make(chan error, 1)
	go func() { watchErr <- p.watch(ctx) }()
	slots := p.slots()
	t := time.NewTicker(p.cfg.Interval / time.Duration(slots))
	defer t.Stop()
	defer p.closeClients()
	sem := make(chan struct{}, p.cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	p.log.Info("prober started", "interval", p.cfg.Interval)
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

// due returns the targets of slot not already being probed, so a slow
// target is never probed twice at once.
func (p *Prober) due(slot int) map[string]*statusClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]*statusClient, len(p.targets)/p.slots()+1)
	for id, t := range p.targets {
		if t.slot == slot && !t.probing {
			t.probing = true
			out[id] = t.client
		}
	}
	return out
}

func (p *Prober) watch(ctx context.Context) error {
	for {
		err := p.reg.Watch(ctx, func(c registry.Change) {
			if c.Synced {
				return
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if c.Deleted || c.Session.Status != messages.StatusReady || c.Session.StatusURL == "" {
				if t, ok := p.targets[c.ID]; ok {
					t.client.close()
					delete(p.targets, c.ID)
				}
				return
			}
			if t, ok := p.targets[c.ID]; ok {
				if t.statusURL != c.Session.StatusURL {
					t.client.close()
					t.statusURL, t.client = c.Session.StatusURL, newStatusClient(c.Session.StatusURL, p.cfg)
				}
				return
			}
			p.targets[c.ID] = &target{statusURL: c.Session.StatusURL, client: newStatusClient(c.Session.StatusURL, p.cfg),
				slot: p.slotOf(c.ID)}
		})
		if ctx.Err() != nil {
			return nil
		}
		// A watch ends when NATS goes away; start over once it is back.
		p.log.Warn("registry watch ended; restarting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (p *Prober) probe(ctx context.Context, id string, client *statusClient) {
	start := p.now()
	st, err := client.fetch(p.cfg.Timeout)
	took := p.now().Sub(start)
	hb := messages.Heartbeat{SessionID: id, Time: start.UTC(), LatencySeconds: took.Seconds()}
	if ctx.Err() == nil {
		p.cfg.Metrics.Probed(took, err != nil)
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
	data, _ := json.Marshal(hb)
	if err := p.nc.Publish(p.subj.Heartbeat(id), data); err != nil {
		p.log.Warn("publish heartbeat", "session_id", id, "err", err)
	}
}
