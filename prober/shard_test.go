package prober

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// beatTimes records when each session's heartbeats arrived.
type beatTimes struct {
	mu    sync.Mutex
	times map[string][]time.Time
}

func (b *beatTimes) since(id string, from time.Time) []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []time.Time
	for _, at := range b.times[id] {
		if !at.Before(from) {
			out = append(out, at)
		}
	}
	return out
}

// shardProber is one replica with its own NATS connection, as a pod has.
type shardProber struct {
	p      *Prober
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

func startShard(t *testing.T, env *bustest.Env, reg *registry.Registry, interval time.Duration) *shardProber {
	t.Helper()
	nc, err := bus.Connect(env.Config, "", "prober", nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Layout: settings.Layout{Prefix: messages.DefaultPrefix}, Probing: settings.Probing{ProbeInterval: interval}, Timeout: time.Second, Concurrency: 64},
		Deps{NATS: nc, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &shardProber{p: p, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- p.Run(ctx) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *shardProber) stop(t *testing.T) {
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("prober Run: %v", err)
		}
		s.done <- nil
	case <-time.After(20 * time.Second):
		t.Error("prober did not stop")
	}
	s.nc.Close()
}

// owners counts, for each session, the live replicas that own it.
func owners(ps []*shardProber, ids []string) map[string]int {
	out := map[string]int{}
	for _, s := range ps {
		s.p.mu.Lock()
		for _, id := range ids {
			if t := s.p.targets[id]; t != nil && t.owned {
				out[id]++
			}
		}
		s.p.mu.Unlock()
	}
	return out
}

func awaitPartition(t *testing.T, ps []*shardProber, ids []string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		bad := 0
		for _, s := range ps {
			s.p.mu.Lock()
			if len(s.p.targets) != len(ids) {
				bad++ // Its cache is not synced yet.
			}
			if len(s.p.view) != len(ps) {
				// Its owned flags come from a view without every replica
				// (or from none yet): a partition that holds only for now.
				bad++
			}
			s.p.mu.Unlock()
		}
		own := owners(ps, ids)
		for _, id := range ids {
			if own[id] != 1 {
				bad++
			}
		}
		if bad == 0 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%d of %d sessions not owned by exactly one of %d probers after %v", bad, len(ids), len(ps), within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestShardedProbers runs three replicas on one NATS: each session is
// probed by one of them, and when one dies without a word its share is
// taken over with no session left more than two intervals unprobed.
func TestShardedProbers(t *testing.T) {
	// Members lapse after half an interval without a beat; at 400 ms,
	// under -race beside the other packages' tests, a busy replica's beat
	// came late often enough that shares kept moving and sessions were
	// probed twice.
	const interval = time.Second
	const sessions = 90
	env := bustest.Run(t)
	reg := registry.New(env.KV)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"active_connections":1,"seconds_inactive":0,"listening":true}`))
	}))
	defer srv.Close()
	var ids []string
	for i := range sessions {
		s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, Backend: "process",
			Upstream: "127.0.0.1:1", StatusURL: fmt.Sprintf("%s/status?n=%d", srv.URL, i),
			CreatedAt: time.Now().UTC(), IdleTimeoutSeconds: 60}
		if _, err := reg.Create(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	beats := &beatTimes{times: map[string][]time.Time{}}
	sub, err := env.Conn.Subscribe("spawner.heartbeat.*", func(m *nats.Msg) {
		var hb messages.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil {
			beats.mu.Lock()
			beats.times[hb.SessionID] = append(beats.times[hb.SessionID], time.Now())
			beats.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	ps := []*shardProber{startShard(t, env, reg, interval), startShard(t, env, reg, interval), startShard(t, env, reg, interval)}
	awaitPartition(t, ps, ids, 10*time.Second)
	for i, s := range ps {
		n := 0
		for _, c := range owners([]*shardProber{s}, ids) {
			n += c
		}
		// Rendezvous hashing of 90 random ids: a third each, give or take.
		if n < sessions/6 || n > sessions*2/3 {
			t.Errorf("prober %d owns %d of %d sessions", i, n, sessions)
		}
	}

	// Steady state: one heartbeat per session per interval, not three.
	time.Sleep(2 * interval)
	from := time.Now()
	time.Sleep(10 * interval)
	to := time.Now()
	for _, id := range ids {
		n := 0
		for _, at := range beats.since(id, from) {
			if at.Before(to) {
				n++
			}
		}
		if n < 8 || n > 12 {
			t.Errorf("session %s: %d heartbeats in 10 intervals from 3 probers, want about 10", id, n)
		}
	}

	// Crash one replica: its connection goes first, so it cannot withdraw
	// from the bucket and the others must notice its silence.
	killed := time.Now()
	ps[0].nc.Close()
	ps[0].stop(t)
	took := awaitPartition(t, ps[1:], ids, interval)
	t.Logf("share of a crashed prober taken over in %v (interval %v)", took, interval)
	time.Sleep(4 * interval)
	end := time.Now()
	worst := time.Duration(0)
	for _, id := range ids {
		ts := beats.since(id, from)
		for i := 1; i < len(ts); i++ {
			if gap := ts[i].Sub(ts[i-1]); gap > worst {
				worst = gap
			}
		}
		if last := ts[len(ts)-1]; end.Sub(last) > worst {
			worst = end.Sub(last)
		}
		n := len(beats.since(id, killed.Add(2*interval)))
		if n > 3 {
			t.Errorf("session %s: %d heartbeats in 2 intervals after the takeover, want 2", id, n)
		}
	}
	t.Logf("longest gap between a session's heartbeats: %v", worst)
	if worst > 2*interval {
		t.Errorf("a session went %v without a heartbeat, more than two intervals (%v)", worst, 2*interval)
	}

	// A replica that joins takes its share and nothing is probed twice.
	ps = append(ps[1:], startShard(t, env, reg, interval))
	awaitPartition(t, ps, ids, interval)
}
