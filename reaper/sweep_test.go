package reaper

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
)

// TestSweepStopsThroughTheSemaphore expires a dozen sessions at once
// against a provisioner that answers slowly: the sweep may have only
// REAP_CONCURRENCY stops in flight, and still ends every session.
func TestSweepStopsThroughTheSemaphore(t *testing.T) {
	env := bustest.Run(t)
	reg := registry.New(env.KV)
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Now()
	const expired, limit = 12, 3
	for range expired {
		s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, Backend: "process",
			MaxLifetimeSeconds: 60, CreatedAt: now.Add(-2 * time.Minute)}
		if _, err := reg.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	inFlight, most, stopped := 0, 0, 0
	var handling sync.WaitGroup
	nc, err := nats.Connect(env.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.Subscribe(subj.Stop(), func(m *nats.Msg) {
		handling.Go(func() {
			var req messages.StopRequest
			_ = json.Unmarshal(m.Data, &req)
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			_ = reg.Delete(context.Background(), req.SessionID, 0)
			mu.Lock()
			inFlight--
			stopped++
			mu.Unlock()
			data, _ := json.Marshal(messages.StopReply{Found: true})
			_ = m.Respond(data)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe(); handling.Wait() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	r, err := New(Config{Layout: settings.Layout{Prefix: messages.DefaultPrefix}, FailureGrace: time.Minute, Sweep: time.Hour,
		StopTimeout: 10 * time.Second, Concurrency: limit}, Deps{JetStream: env.JS, NATS: env.Conn, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	r.sweep(ctx, sem, &wg)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if stopped != expired {
		t.Errorf("%d sessions stopped, want %d", stopped, expired)
	}
	if most > limit {
		t.Errorf("%d stops in flight at once, want at most %d", most, limit)
	}
	if most < 2 {
		t.Errorf("at most %d stop in flight; the sweep should use its slots", most)
	}
}
