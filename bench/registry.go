package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	gateway "github.com/spawnerhq/spawner/api-gateway"
	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// registryBench is one embedded NATS with three buckets side by side:
// a new one, one that saw many sessions come and go, and one made the way
// older versions made it (no marker TTLs), all through the production
// registry and bus.Ensure.
type registryBench struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg bus.Config
	log *slog.Logger
}

type bucket struct {
	prefix string
	reg    *registry.Registry
}

// RegistryAge measures the registry after a long life: how many entries
// the bucket keeps once 100,000 sessions have ended, how long a fresh
// watch takes to sync on such a bucket (and on one an older version made,
// once upgraded in place), and GET /sessions at 10,000 live sessions,
// through the real gateway handler.
func RegistryAge(ctx context.Context, env *Env) (Section, error) {
	sec := Section{Title: "The registry at any age",
		PeerName: "what the row names: a bucket as older versions made it, a new bucket, the bucket scan GET /sessions did before"}
	ended := pick(env, 100_000, 5_000)
	live := pick(env, 10_000, 1_000)
	srv, err := bus.RunEmbedded(bus.EmbeddedConfig{Listen: "off", StoreDir: env.Scratch("registry")})
	if err != nil {
		return sec, err
	}
	defer srv.Shutdown()
	b := &registryBench{cfg: bus.Config{Replication: settings.Replication{Replicas: 1}}, log: slog.New(slog.DiscardHandler)}
	if b.nc, err = bus.Connect(b.cfg, "", "bench", srv, b.log); err != nil {
		return sec, err
	}
	defer b.nc.Close()
	if b.js, err = jetstream.New(b.nc); err != nil {
		return sec, err
	}

	fresh, err := b.ensure(ctx, "fresh")
	if err != nil {
		return sec, err
	}
	aged, err := b.ensure(ctx, "aged")
	if err != nil {
		return sec, err
	}
	for _, bk := range []bucket{fresh, aged} {
		if err := register(ctx, bk.reg, live); err != nil {
			return sec, err
		}
	}
	if err := churn(ctx, aged.reg, ended); err != nil {
		return sec, err
	}
	lastEnd := time.Now()
	// While the aged bucket's markers expire, an older version's bucket
	// goes through the same life.
	legacy, legacyEntries, err := b.legacy(ctx, live, ended)
	if err != nil {
		return sec, err
	}
	agedEntries, settled, err := b.awaitEntries(ctx, aged.prefix, uint64(live+100), lastEnd, 3*time.Minute)
	if err != nil {
		return sec, err
	}
	sec.Rows = append(sec.Rows, Row{
		Metric:  fmt.Sprintf("bucket entries after %d sessions ended, %d live", ended, live),
		Spawner: fmt.Sprintf("%d (reached %s after the last end)", agedEntries, settled.Round(time.Second)),
		Peer:    fmt.Sprintf("%d (older bucket, no marker TTL)", legacyEntries),
		Goal:    "≤ live + 100 within 2 min",
		Met:     Met(agedEntries <= uint64(live+100) && settled <= 2*time.Minute),
	})

	rounds := pick(env, 15, 5)
	early := medianSyncs(ctx, rounds, fresh.reg, aged.reg, legacy.reg)
	transientBase, transient, beforeUpgrade := early[0], early[1], early[2]
	upgradeStart := time.Now()
	if _, err := b.ensure(ctx, legacy.prefix); err != nil {
		return sec, fmt.Errorf("upgrade the older bucket: %w", err)
	}
	upgradeTook := time.Since(upgradeStart)
	upgradedEntries, _ := b.entries(ctx, legacy.prefix)
	// The server's file store writes out and compacts its blocks every
	// two minutes (SyncInterval); until then the removed entries' bytes
	// are still read past by a new watch. Measure after it has run, as a
	// gateway starting on a long-lived bucket finds it.
	select {
	case <-ctx.Done():
		return sec, ctx.Err()
	case <-time.After(storeSync):
	}

	late := medianSyncs(ctx, rounds, fresh.reg, aged.reg, legacy.reg)
	base, agedSync, upgradedSync := late[0], late[1], late[2]
	syncRow := func(metric string, d time.Duration) Row {
		r := float64(d) / float64(max(base, 1))
		return Row{Metric: metric, Spawner: Ms(d), Peer: Ms(base) + " (new bucket, same live sessions)",
			Ratio: Ratio(float64(d), float64(base)), Goal: "≤ 1.2×", Met: Met(base > 0 && r <= 1.2)}
	}
	sec.Rows = append(sec.Rows,
		syncRow(fmt.Sprintf("fresh watch to synced, bucket after %d ended sessions (median of %d)", ended, rounds), agedSync),
		syncRow(fmt.Sprintf("fresh watch to synced, older version's bucket upgraded at start (median of %d)", rounds), upgradedSync),
		Row{Metric: "the same, within a minute of the ends, before the store compacted", Spawner: Ms(transient),
			Peer: Ms(transientBase) + " (new bucket)", Ratio: Ratio(float64(transient), float64(transientBase)), Met: "—"},
	)
	sec.Notes = append(sec.Notes,
		fmt.Sprintf("The older version's bucket held %d entries and took %s to sync before bus.Ensure upgraded it; "+
			"the upgrade (marker TTL on, its %d old markers dropped) took %s and left %d entries.",
			legacyEntries, Ms(beforeUpgrade), legacyEntries-uint64(live), upgradeTook.Round(time.Millisecond), upgradedEntries),
		fmt.Sprintf("Markers expire after bus.MarkerTTL (%s); ended sessions are created, set ready and purged through the "+
			"production registry, %d writers at once. Watches were timed %s after the last removal, once the "+
			"server's file store had compacted, taking turns with the new bucket round by round; the fourth row is "+
			"the same watch a minute after the ends, before that.", bus.MarkerTTL, writers, storeSync))

	list, scan, err := b.listSessions(ctx, aged, pick(env, 200, 20))
	if err != nil {
		return sec, err
	}
	sec.Rows = append(sec.Rows, Row{
		Metric:  fmt.Sprintf("GET /sessions with %d live sessions, p50 (p99 %s)", live, Ms(list.Percentile(99))),
		Spawner: Ms(list.Percentile(50)),
		Peer:    Ms(scan.Percentile(50)) + " (the bucket scan it replaced, registry.List)",
		Ratio:   Ratio(float64(list.Percentile(50)), float64(scan.Percentile(50))),
		Goal:    "< 5 ms", Met: Met(list.Percentile(50) > 0 && list.Percentile(50) < 5*time.Millisecond),
	})
	return sec, nil
}

const writers = 32

// storeSync outlasts the server's file store sync interval (two minutes by
// default), after which the blocks of removed entries are compacted.
const storeSync = 2*time.Minute + 10*time.Second

func (b *registryBench) ensure(ctx context.Context, prefix string) (bucket, error) {
	cfg := b.cfg
	cfg.Prefix = prefix
	kv, err := bus.Ensure(ctx, b.js, cfg)
	if err != nil {
		return bucket{}, err
	}
	return bucket{prefix: prefix, reg: registry.New(kv)}, nil
}

// legacy makes a bucket as versions before marker TTLs did, and lives
// the same life in it; it returns the bucket and its entry count.
func (b *registryBench) legacy(ctx context.Context, live, ended int) (bucket, uint64, error) {
	subj, err := messages.NewSubjects("legacy")
	if err != nil {
		return bucket{}, 0, err
	}
	kv, err := b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: subj.SessionBucket(), History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return bucket{}, 0, err
	}
	bk := bucket{prefix: "legacy", reg: registry.New(kv)}
	if err := register(ctx, bk.reg, live); err != nil {
		return bk, 0, err
	}
	if err := churn(ctx, bk.reg, ended); err != nil {
		return bk, 0, err
	}
	n, err := b.entries(ctx, bk.prefix)
	return bk, n, err
}

func (b *registryBench) entries(ctx context.Context, prefix string) (uint64, error) {
	subj, err := messages.NewSubjects(prefix)
	if err != nil {
		return 0, err
	}
	s, err := b.js.Stream(ctx, "KV_"+subj.SessionBucket())
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// awaitEntries polls the bucket until it holds at most want entries, or
// limit has passed since from.
func (b *registryBench) awaitEntries(ctx context.Context, prefix string, want uint64, from time.Time, limit time.Duration) (uint64, time.Duration, error) {
	for {
		n, err := b.entries(ctx, prefix)
		if err != nil {
			return 0, 0, err
		}
		if n <= want || time.Since(from) > limit {
			return n, time.Since(from), nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// medianSyncs times a new registry cache from start to synced on each
// registry, taking turns round by round so that the machine's other work
// falls on all of them alike, and returns the medians.
func medianSyncs(ctx context.Context, rounds int, regs ...*registry.Registry) []time.Duration {
	samples := make([]Durations, len(regs))
	for range rounds {
		for i, reg := range regs {
			samples[i] = append(samples[i], syncTime(ctx, reg))
		}
	}
	out := make([]time.Duration, len(regs))
	for i, d := range samples {
		out[i] = d.Percentile(50)
	}
	return out
}

func syncTime(ctx context.Context, reg *registry.Registry) time.Duration {
	c := registry.NewCache(reg, nil, slog.New(slog.DiscardHandler))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-c.Synced():
		return time.Since(start)
	case <-ctx.Done():
		return 0
	}
}

// listSessions serves the bucket through a real gateway, with a heartbeat
// for every session as the prober would give it, and times GET /sessions
// over HTTP; then times the bucket scan the handler used to make.
func (b *registryBench) listSessions(ctx context.Context, bk bucket, n int) (list, scan Durations, err error) {
	cfg := settings.Defaults[gateway.Config]()
	cfg.Prefix, cfg.SpawnTimeout, cfg.DrainTimeout = bk.prefix, time.Second, time.Second
	gw, err := gateway.New(cfg,
		gateway.Deps{NATS: b.nc, Registry: bk.reg, Log: b.log})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = gw.Serve(runCtx, ln) })
	defer func() { cancel(); wg.Wait() }()
	base := "http://" + ln.Addr().String()
	if err := WaitHTTP(ctx, base+"/readyz"); err != nil {
		return nil, nil, err
	}
	entries, err := bk.reg.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	subj, _ := messages.NewSubjects(bk.prefix)
	for _, e := range entries {
		data, _ := json.Marshal(messages.Heartbeat{SessionID: e.Session.ID, Time: time.Now().UTC(), OK: true, Listening: true})
		if err := b.nc.Publish(subj.Heartbeat(e.Session.ID), data); err != nil {
			return nil, nil, err
		}
	}
	if err := b.nc.Flush(); err != nil {
		return nil, nil, err
	}
	client := &http.Client{Timeout: 30 * time.Second}
	for i := range n + 5 {
		start := time.Now()
		resp, err := client.Get(base + "/sessions")
		if err != nil {
			return nil, nil, err
		}
		var body []byte
		if i == 0 {
			body, err = io.ReadAll(resp.Body)
		} else {
			_, err = io.Copy(io.Discard, resp.Body) // Time the answer, not a client's buffers.
		}
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, nil, fmt.Errorf("GET /sessions: status %d: %v", resp.StatusCode, err)
		}
		if i == 0 {
			var page struct {
				Count int `json:"count"`
			}
			if err := json.Unmarshal(body, &page); err != nil || page.Count != len(entries) {
				return nil, nil, fmt.Errorf("GET /sessions listed %d sessions of %d: %v", page.Count, len(entries), err)
			}
		}
		if i >= 5 { // The first few warm the connection and the caches.
			list = append(list, took)
		}
	}
	for range max(n/10, 5) {
		start := time.Now()
		if _, err := bk.reg.List(ctx); err != nil {
			return nil, nil, err
		}
		scan = append(scan, time.Since(start))
	}
	return list, scan, nil
}

// register writes n ready sessions.
func register(ctx context.Context, reg *registry.Registry, n int) error {
	return parallel(n, func() error {
		_, err := reg.Create(ctx, FakeSession("127.0.0.1:1", "", 3600))
		return err
	})
}

// churn lives n sessions' lives in the registry as the provisioner does:
// created, set ready, purged.
func churn(ctx context.Context, reg *registry.Registry, n int) error {
	return parallel(n, func() error {
		s := FakeSession("127.0.0.1:1", "", 60)
		s.Status = messages.StatusCreating
		rev, err := reg.Create(ctx, s)
		if err != nil {
			return err
		}
		s.Status = messages.StatusReady
		if rev, err = reg.Update(ctx, s, rev); err != nil {
			return err
		}
		return reg.Delete(ctx, s.ID, rev)
	})
}

// parallel runs fn n times on a few goroutines and returns the first error.
func parallel(n int, fn func() error) error {
	work := make(chan struct{})
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			var first error
			for range work {
				if err := fn(); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		})
	}
	for range n {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
