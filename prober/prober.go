// Package prober polls every ready session's /status and publishes what it
// learns as heartbeats, which the reaper reads from JetStream.
package prober

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// Config holds the prober's settings.
type Config struct {
	Prefix      string        `envconfig:"PREFIX" default:"spawner"`
	Interval    time.Duration `envconfig:"PROBE_INTERVAL" default:"5s"`
	Timeout     time.Duration `envconfig:"PROBE_TIMEOUT" default:"2s"`
	Concurrency int           `envconfig:"PROBE_CONCURRENCY" default:"256"`
	// Metrics records probe latency and failures; nil records nothing.
	Metrics *metrics.Metrics `ignored:"true"`
}

// Prober keeps its targets from a registry watch and probes them.
type Prober struct {
	cfg    Config
	nc     *nats.Conn
	reg    *registry.Registry
	log    *slog.Logger
	now    func() time.Time
	subj   messages.Subjects
	client *http.Client

	mu      sync.Mutex
	targets map[string]*target
}

type target struct {
	statusURL    string
	failingSince time.Time
	probing      bool
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
	transport := &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 1,
		// Keep one connection per target between rounds: reconnecting to
		// thousands of targets every interval costs more than holding them.
		IdleConnTimeout:       2*cfg.Interval + time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
		DisableCompression:    true,
	}
	return &Prober{
		cfg: cfg, nc: nc, reg: reg, now: now, subj: subj, log: log.With("component", "prober"),
		client:  &http.Client{Timeout: cfg.Timeout, Transport: transport},
		targets: map[string]*target{},
	}, nil
}

// Run probes until ctx is done and returns nil then.
func (p *Prober) Run(ctx context.Context) error {
	watchErr := make(chan error, 1)
	go func() { watchErr <- p.watch(ctx) }()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	defer p.client.CloseIdleConnections()
	sem := make(chan struct{}, p.cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	p.log.Info("prober started", "interval", p.cfg.Interval)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-watchErr:
			return err
		case <-t.C:
		}
		for id, tg := range p.due() {
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

// due returns the targets not already being probed, so a slow target is
// never probed twice at once.
func (p *Prober) due() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.targets))
	for id, t := range p.targets {
		if !t.probing {
			t.probing = true
			out[id] = t.statusURL
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
				delete(p.targets, c.ID)
				return
			}
			if t, ok := p.targets[c.ID]; ok {
				t.statusURL = c.Session.StatusURL
				return
			}
			p.targets[c.ID] = &target{statusURL: c.Session.StatusURL}
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

func (p *Prober) probe(ctx context.Context, id, statusURL string) {
	start := p.now()
	st, err := p.fetch(ctx, statusURL)
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

func (p *Prober) fetch(ctx context.Context, url string) (messages.AppStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return messages.AppStatus{}, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return messages.AppStatus{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return messages.AppStatus{}, fmt.Errorf("/status answered %s", resp.Status)
	}
	return messages.DecodeAppStatus(resp.Body)
}
