package integration

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

type sessionList struct {
	Sessions []struct {
		messages.Session
	} `json:"sessions"`
}

func poolSessions(t testing.TB, h *harness) sessionList {
	t.Helper()
	code, body := get(t, h.BaseURL+"/sessions")
	var out sessionList
	if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("GET /sessions: %d %s", code, body)
	}
	return out
}

func pooledIDs(t testing.TB, h *harness) map[string]bool {
	ids := map[string]bool{}
	for _, s := range poolSessions(t, h).Sessions {
		if s.Pooled {
			ids[s.ID] = true
		}
	}
	return ids
}

func TestWarmPool(t *testing.T) {
	cfg := testConfig(t)
	cfg.Provisioner.WarmPool = 3
	cfg.Provisioner.IdleTimeout = 2 * time.Second
	h := start(t, cfg)
	eventually(t, 20*time.Second, "the pool to fill", func() bool { return len(pooledIDs(t, h)) == 3 })

	// Pooled sessions are never reaped, though their apps sit idle.
	time.Sleep(3 * cfg.Provisioner.IdleTimeout)
	pool := pooledIDs(t, h)
	if len(pool) != 3 {
		t.Fatalf("pooled sessions were reaped: %d left", len(pool))
	}

	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{"key":"pooled-doc"}`, &rep); code != http.StatusCreated || !rep.Created {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	if !pool[rep.SessionID] {
		t.Fatalf("session %s did not come from the pool %v", rep.SessionID, pool)
	}
	if code, _ := get(t, rep.URL+"status"); code != http.StatusOK {
		t.Fatalf("claimed session is not routable: %d", code)
	}
	var again messages.SpawnReply
	if post(t, h.BaseURL+"/init", `{"key":"pooled-doc"}`, &again); again.SessionID != rep.SessionID || again.Created {
		t.Fatalf("the key did not find the claimed session: %+v", again)
	}
	// The app was idle long before the claim; that must not reap it now.
	time.Sleep(cfg.Provisioner.IdleTimeout / 2)
	if code, _ := get(t, h.BaseURL+"/sessions/"+rep.SessionID); code != http.StatusOK {
		t.Fatal("a claimed session was reaped for idleness from before its claim")
	}
	eventually(t, 20*time.Second, "the pool to refill", func() bool { return len(pooledIDs(t, h)) == 3 })

	// A request with env cannot use a pooled app, whose env is fixed.
	var withEnv messages.SpawnReply
	before := pooledIDs(t, h)
	if code := post(t, h.BaseURL+"/init", `{"env":{"MODE":"x"}}`, &withEnv); code != http.StatusCreated || before[withEnv.SessionID] {
		t.Fatalf("a request with env was served from the pool: %d %+v", code, withEnv)
	}

	// Never claimed twice, even under a burst larger than the pool.
	const n = 12
	var wg sync.WaitGroup
	replies := make([]messages.SpawnReply, n)
	for i := range n {
		wg.Go(func() { post(t, h.BaseURL+"/init", "", &replies[i]) })
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, r := range replies {
		if r.SessionID == "" || seen[r.SessionID] {
			t.Fatalf("reply %d: %+v (duplicate %v)", i, r, seen[r.SessionID])
		}
		seen[r.SessionID] = true
	}
	// Claimed sessions idle out like any other.
	eventually(t, 20*time.Second, "the claimed session to idle out", func() bool {
		code, _ := get(t, h.BaseURL+"/sessions/"+rep.SessionID)
		return code == http.StatusNotFound
	})
}

// BenchmarkWarmPoolInit measures /init served from the warm pool, end to
// end over HTTP: the pool is as large as the run, so every claim is warm.
func BenchmarkWarmPoolInit(b *testing.B) {
	cfg := testConfig(b)
	cfg.Provisioner.WarmPool = b.N
	cfg.Provisioner.IdleTimeout = time.Hour
	cfg.Common.LogLevel = "warn"
	h := start(b, cfg)
	eventually(b, time.Duration(b.N)*time.Second+30*time.Second, "the pool to fill", func() bool { return len(pooledIDs(b, h)) >= b.N })
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		began := time.Now()
		var rep messages.SpawnReply
		if code := post(b, h.BaseURL+"/init", "", &rep); code != http.StatusCreated {
			b.Fatalf("POST /init: %d", code)
		}
		samples = append(samples, time.Since(began))
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds())/1000, "p99-ms")
}
