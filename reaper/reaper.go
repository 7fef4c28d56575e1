// Package reaper ends sessions that are idle, past their lifetime, or whose
// probes keep failing. It reads heartbeats through a durable JetStream
// consumer and asks the provisioner to stop, acking only once the stop
// was accepted, so a crash between the two only causes a harmless retry.
package reaper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// Config holds the reaper's settings.
type Config struct {
	settings.Layout
	// FailureGrace is how long probes may fail before the session ends.
	FailureGrace time.Duration `envconfig:"PROBE_FAILURE_GRACE" default:"30s" desc:"a session whose probes fail this long ends (unhealthy)"`
	// Sweep is how often records are checked for their lifetime, which
	// must end sessions even when no heartbeat arrives.
	Sweep       time.Duration `envconfig:"LIFETIME_SWEEP" default:"15s" desc:"how often sessions are checked against their maximum lifetime"`
	StopTimeout time.Duration `envconfig:"STOP_TIMEOUT" default:"10s" desc:"how long the reaper waits for one stop request"`
	Concurrency int           `envconfig:"REAP_CONCURRENCY" default:"64" desc:"stop requests the reaper has in flight at once"`
}

// Deps are what a reaper works with besides its settings.
type Deps struct {
	// JetStream holds the heartbeat stream the reaper consumes.
	JetStream jetstream.JetStream
	// NATS carries the stop requests and the registry watch.
	NATS *nats.Conn
	// Registry is where the reaper reads sessions.
	Registry *registry.Registry
	// Now is the reaper's clock; nil is time.Now.
	Now func() time.Time
	// Log receives the reaper's messages; nil discards them.
	Log *slog.Logger
	// Metrics counts reaps by reason; nil records nothing.
	Metrics *metrics.Metrics
	// Cache is a registry copy shared with the process's other components,
	// which the process keeps current; nil makes the reaper keep its own.
	Cache *registry.Cache
}

// Reaper decides when sessions end.
type Reaper struct {
	cfg  Config
	js   jetstream.JetStream
	nc   *nats.Conn
	reg  *registry.Registry
	now  func() time.Time
	log  *slog.Logger
	mx   *metrics.Metrics
	subj messages.Subjects

	mu       sync.Mutex
	stopping map[string]bool
	cache    *registry.Cache
	// ownCache says the reaper runs its cache; a shared one is run by the
	// process.
	ownCache bool
}

// New builds a reaper from its settings and its dependencies.
func New(cfg Config, deps Deps) (*Reaper, error) {
	subj, err := messages.NewPoolSubjects(cfg.Prefix, cfg.Pool)
	if err != nil {
		return nil, err
	}
	// The defaults live in the tags; a setting that is not positive is a
	// mistake to report, not to replace with a second default.
	if cfg.StopTimeout <= 0 || cfg.Sweep <= 0 || cfg.Concurrency < 1 {
		return nil, fmt.Errorf("reaper: SPAWNER_STOP_TIMEOUT (%s), SPAWNER_LIFETIME_SWEEP (%s) and SPAWNER_REAP_CONCURRENCY (%d) must be positive",
			cfg.StopTimeout, cfg.Sweep, cfg.Concurrency)
	}
	now, log := deps.Now, deps.Log
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reaper{cfg: cfg, js: deps.JetStream, nc: deps.NATS, reg: deps.Registry, now: now, subj: subj,
		mx: deps.Metrics, log: log.With("component", "reaper"), stopping: map[string]bool{}}
	r.cache, r.ownCache = deps.Cache, deps.Cache == nil
	if r.ownCache {
		r.cache = registry.NewCache(r.reg, r.nc, r.log)
	}
	return r, nil
}

// Run consumes heartbeats until ctx is done and returns nil then.
func (r *Reaper) Run(ctx context.Context) error {
	cons, err := r.js.CreateOrUpdateConsumer(ctx, r.subj.HeartbeatStream(), jetstream.ConsumerConfig{
		Durable:       r.subj.ReaperConsumer(),
		Description:   "Spawner reapers share this consumer",
		FilterSubject: r.subj.Heartbeats(),
		// The newest heartbeat of each session is all that matters when a
		// reaper first starts.
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           r.cfg.StopTimeout + 5*time.Second,
		MaxDeliver:        -1,
		MaxAckPending:     20000,
		InactiveThreshold: 0,
	})
	if err != nil {
		return fmt.Errorf("reaper consumer: %w", err)
	}
	sem := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	if r.ownCache {
		wg.Go(func() { _ = r.cache.Run(ctx) })
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		if r.settled(msg) {
			return
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r.handle(ctx, msg)
		})
	}, jetstream.PullMaxMessages(1000))
	if err != nil {
		return fmt.Errorf("consume heartbeats: %w", err)
	}
	r.log.Info("reaper started")
	t := time.NewTicker(r.cfg.Sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			cc.Stop()
			wg.Wait()
			return nil
		case <-t.C:
			r.sweep(ctx, sem, &wg)
		}
	}
}

// settled acks, at once and on the consumer's goroutine, a heartbeat whose
// session the cache holds and which calls for no stop: nearly all of them.
// Before, every heartbeat took a slot of the stop semaphore, so the 6,000
// a second of 30,000 sessions queued behind the stops in flight when many
// sessions went idle together, and a reap that takes 5 s at 10,000
// sessions took 23 s at 30,000 (BENCHMARKS.md, "Cost as sessions grow").
func (r *Reaper) settled(msg jetstream.Msg) bool {
	hb, err := messages.DecodeHeartbeat(msg.Data())
	if err != nil {
		return false // handle drops it, and says so.
	}
	r.mu.Lock()
	stopping := r.stopping[hb.SessionID]
	r.mu.Unlock()
	if stopping {
		// Its stop is in flight here already, and that stop's own
		// heartbeat is acked only once it is done.
		_ = msg.Ack()
		return true
	}
	s, ok := r.cache.Get(hb.SessionID)
	if !ok {
		return false // Only the registry can tell; that read waits for a slot.
	}
	if reason, _ := r.decide(s, hb); reason != "" {
		return false
	}
	_ = msg.Ack()
	return true
}

func (r *Reaper) handle(ctx context.Context, msg jetstream.Msg) {
	hb, err := messages.DecodeHeartbeat(msg.Data())
	if err != nil {
		r.log.Warn("dropping undecodable heartbeat", "subject", msg.Subject())
		_ = msg.Term()
		return
	}
	s, err := r.session(ctx, hb.SessionID)
	if errors.Is(err, registry.ErrNotFound) {
		_ = msg.Ack()
		return
	}
	if err != nil {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	reason, detail := r.decide(s, hb)
	if reason == "" {
		_ = msg.Ack()
		return
	}
	if err := r.stop(ctx, hb.SessionID, reason, detail); err != nil {
		if ctx.Err() == nil {
			r.log.Error("stop", "session_id", hb.SessionID, "reason", reason, "err", err)
		}
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}

// decide returns why the session must end, or "" if it lives on.
func (r *Reaper) decide(s messages.Session, hb messages.Heartbeat) (messages.Reason, string) {
	if s.Status != messages.StatusReady || s.Pooled {
		return "", "" // A pooled session waits, unused by design, for a client.
	}
	now := r.now()
	if reason, detail := r.expired(s, now); reason != "" {
		return reason, detail
	}
	inactive := hb.SecondsInactive
	if !s.ClaimedAt.IsZero() {
		// A warm session's app was idle before anyone held it; that time
		// does not count against its new owner.
		inactive = min(inactive, int64(now.Sub(s.ClaimedAt)/time.Second))
	}
	if hb.OK && s.IdleTimeoutSeconds > 0 && inactive >= s.IdleTimeoutSeconds {
		return messages.ReasonIdle, fmt.Sprintf("inactive for %ds, the limit is %ds", inactive, s.IdleTimeoutSeconds)
	}
	if !hb.OK && !hb.FailingSince.IsZero() && now.Sub(hb.FailingSince) >= r.cfg.FailureGrace {
		return messages.ReasonUnhealthy, fmt.Sprintf("probes failing since %s: %s", hb.FailingSince.Format(time.RFC3339), hb.Error)
	}
	return "", ""
}

func (r *Reaper) expired(s messages.Session, now time.Time) (messages.Reason, string) {
	if s.MaxLifetimeSeconds > 0 && now.Sub(s.CreatedAt) >= time.Duration(s.MaxLifetimeSeconds)*time.Second {
		return messages.ReasonLifetime, fmt.Sprintf("lived past its maximum of %ds", s.MaxLifetimeSeconds)
	}
	return "", ""
}

// sweep stops the sessions past their lifetime. Each stop takes a slot of
// sem, as the heartbeats' stops do, so 10,000 sessions expiring at once
// are REAP_CONCURRENCY stops in flight rather than 10,000 goroutines; the
// sweep waits for a slot before it starts the next.
func (r *Reaper) sweep(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) {
	sessions, ok := r.cache.List()
	if !ok {
		// The copy may lack sessions; the sweep must not, or their
		// lifetime would go unchecked while NATS is unsettled.
		sessions = sessions[:0]
		entries, err := r.reg.List(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("lifetime sweep", "err", err)
			}
			return
		}
		for _, e := range entries {
			sessions = append(sessions, e.Session)
		}
	}
	now := r.now()
	for _, s := range sessions {
		if s.Status != messages.StatusReady || s.Pooled {
			continue
		}
		reason, detail := r.expired(s, now)
		if reason == "" {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := r.stop(ctx, s.ID, reason, detail); err != nil && ctx.Err() == nil {
				r.log.Error("stop", "session_id", s.ID, "reason", reason, "err", err)
			}
		})
	}
}

// stop asks the provisioners to end the session. Duplicate heartbeats for
// a session already being stopped here wait for nothing: the provisioner's
// stop is idempotent, so they can be acked at once.
func (r *Reaper) stop(ctx context.Context, id string, reason messages.Reason, detail string) error {
	r.mu.Lock()
	if r.stopping[id] {
		r.mu.Unlock()
		return nil
	}
	r.stopping[id] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.stopping, id)
		r.mu.Unlock()
	}()
	// Another heartbeat's stop may have finished since the caller read the
	// record. The provisioner changes the record before it answers a stop,
	// so a fresh read tells, and the session is not stopped twice.
	if e, err := r.reg.Get(ctx, id); errors.Is(err, registry.ErrNotFound) || (err == nil && e.Session.Status != messages.StatusReady) {
		return nil
	}
	r.log.Info("reaping", "session_id", id, "reason", reason, "detail", detail)
	data, _ := json.Marshal(messages.StopRequest{SessionID: id, Reason: reason, Detail: detail})
	ctx, cancel := context.WithTimeout(ctx, r.cfg.StopTimeout)
	defer cancel()
	msg, err := r.nc.RequestWithContext(ctx, r.subj.Stop(), data)
	if err != nil {
		return fmt.Errorf("stop request: %w", err)
	}
	var rep messages.StopReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return fmt.Errorf("stop reply: %w", err)
	}
	if rep.Error != nil {
		return rep.Error
	}
	if rep.Found {
		r.mx.Reaped(reason)
	}
	return nil
}
