package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// BenchmarkListSessions serves GET /sessions from the registry cache with
// 10,000 live sessions, each with a heartbeat, through the real handler.
func BenchmarkListSessions(b *testing.B) {
	env := bustest.Run(b)
	reg := registry.New(env.KV)
	g, err := New(testConfig(time.Second), Deps{NATS: env.Conn, Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = g.cache.Run(ctx) }()
	const n = 10_000
	now := time.Now().UTC()
	for range n {
		s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, URL: "http://localhost:8080/p/x/",
			Upstream: "127.0.0.1:1", StatusURL: "http://127.0.0.1:1/status", Backend: "process", Owner: "p",
			IdleTimeoutSeconds: 300, CreatedAt: now, ReadyAt: now, Labels: map[string]string{"team": "blue"}}
		if _, err := reg.Create(ctx, s); err != nil {
			b.Fatal(err)
		}
		g.beats.beats[s.ID] = messages.Heartbeat{SessionID: s.ID, Time: now, OK: true, ActiveConnections: 1, SecondsInactive: 3}
	}
	for g.cache.Len() < n || !g.cache.IsSynced() {
		time.Sleep(10 * time.Millisecond)
	}
	h := g.Handler()
	b.ReportAllocs()
	// CPU time of this thread, beside the wall time: on a shared machine
	// the wall time mostly measures the neighbours.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	b.ResetTimer()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/sessions", nil))
		if w.Code != http.StatusOK {
			b.Fatalf("status %d", w.Code)
		}
	}
	b.ReportMetric(float64(threadCPU()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
}

func threadCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(1, &ru) // RUSAGE_THREAD
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
