package integration

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/messages"
)

// faultHeartbeats records when each session was probed: the time every
// heartbeat says its probe started. It listens on one connection per NATS
// server, each kept to its server, so that while one server is down (or
// a connection is moving) the others still hear every heartbeat; the
// same heartbeat heard twice counts once.
type faultHeartbeats struct {
	mu    sync.Mutex
	times map[string][]time.Time
	seen  map[string]bool
	heard int
}

// faultWatchHeartbeats subscribes to every session's heartbeats on each
// of urls.
func faultWatchHeartbeats(t *testing.T, urls []string, opts ...nats.Option) *faultHeartbeats {
	t.Helper()
	h := &faultHeartbeats{times: map[string][]time.Time{}, seen: map[string]bool{}}
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	for i, url := range urls {
		nc, err := faultDial(url, fmt.Sprintf("fault-heartbeats-%d", i), append(opts, nats.IgnoreDiscoveredServers())...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if _, err := nc.Subscribe(subj.Heartbeats(), func(m *nats.Msg) { h.add(m.Data) }); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h *faultHeartbeats) add(data []byte) {
	hb, err := messages.DecodeHeartbeat(data)
	if err != nil {
		return
	}
	key := hb.SessionID + "|" + hb.Time.Format(time.RFC3339Nano)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.heard++
	if h.seen[key] {
		return
	}
	h.seen[key] = true
	h.times[hb.SessionID] = append(h.times[hb.SessionID], hb.Time)
}

// faultProbeGap is the longest time one session went unprobed.
type faultProbeGap struct {
	Session  string
	Gap      time.Duration
	From, To time.Time
}

// faultProbeGaps summarises how well the sessions were probed.
type faultProbeGaps struct {
	Sessions   int
	Heartbeats int
	// Worst is each session's longest gap between two heartbeats, longest
	// first: while a session is ready it is probed every interval, so
	// a gap is time it went unprobed. The time after its last heartbeat
	// is its end, and is left out.
	Worst []faultProbeGap
	// FirstProbe is, per session with a ready event, how long after it
	// the first probe came, sorted.
	FirstProbe []time.Duration
}

// gaps computes the gaps of every session heard; ready
// gives the time each session's ready event says it became ready.
func (h *faultHeartbeats) gaps(ready map[string]time.Time) faultProbeGaps {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := faultProbeGaps{Sessions: len(h.times)}
	for id, times := range h.times {
		times = slices.Clone(times)
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		out.Heartbeats += len(times)
		worst := faultProbeGap{Session: id}
		for i := 1; i < len(times); i++ {
			if g := times[i].Sub(times[i-1]); g > worst.Gap {
				worst.Gap, worst.From, worst.To = g, times[i-1], times[i]
			}
		}
		out.Worst = append(out.Worst, worst)
		if at, ok := ready[id]; ok {
			out.FirstProbe = append(out.FirstProbe, times[0].Sub(at))
		}
	}
	sort.Slice(out.Worst, func(i, j int) bool { return out.Worst[i].Gap > out.Worst[j].Gap })
	slices.Sort(out.FirstProbe)
	return out
}

// heardTotal is how many heartbeats arrived, counting each connection's.
func (h *faultHeartbeats) heardTotal() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.heard
}
