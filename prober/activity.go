package prober

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/messages"
)

// activityBook keeps what the gateways report of the sessions whose
// activity sources include the proxy. Gateways report only sessions that
// were used in an interval, so a session absent from the reports has been
// idle since the last time it was seen.
type activityBook struct {
	interval time.Duration
	mu       sync.Mutex
	sessions map[string]*proxySeen
}

// proxySeen is one session's traffic as the gateway replicas saw it.
type proxySeen struct {
	lastActive time.Time
	// open is each replica's count of requests and upgraded connections
	// still open, with when it was reported.
	open map[string]openCount
}

type openCount struct {
	n        int
	reported time.Time
}

func newActivityBook(interval time.Duration) *activityBook {
	return &activityBook{interval: interval, sessions: map[string]*proxySeen{}}
}

// record takes one gateway's report; unknown sessions are kept only if
// want says the prober probes them, so a stray report cannot grow the book.
func (b *activityBook) record(msg *nats.Msg, want func(id string) bool) {
	a, err := messages.DecodeActivity(msg.Data)
	if err != nil {
		return
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range a.Sessions {
		seen := b.sessions[s.SessionID]
		if seen == nil {
			if !want(s.SessionID) {
				continue
			}
			seen = &proxySeen{open: map[string]openCount{}}
			b.sessions[s.SessionID] = seen
		}
		if s.LastActive.After(seen.lastActive) {
			seen.lastActive = s.LastActive
		}
		seen.open[a.Gateway] = openCount{n: s.InFlight + s.Upgraded, reported: now}
	}
}

// forget drops a session that is no longer probed.
func (b *activityBook) forget(id string) {
	b.mu.Lock()
	delete(b.sessions, id)
	b.mu.Unlock()
}

// view returns how many requests and connections are open on the session
// across the gateway replicas, and when it was last active, never earlier
// than since. A replica's count lapses after two intervals without a
// report: it closed everything, or it died.
func (b *activityBook) view(id string, since, now time.Time) (open int, lastActive time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lastActive = since
	seen := b.sessions[id]
	if seen == nil {
		return 0, lastActive
	}
	if seen.lastActive.After(lastActive) {
		lastActive = seen.lastActive
	}
	for gw, c := range seen.open {
		if now.Sub(c.reported) > 2*b.interval {
			delete(seen.open, gw)
			continue
		}
		open += c.n
	}
	return open, lastActive
}

// mergeProxy folds the proxy's view into a heartbeat: the session is busy
// if the app or any gateway says so, and inactive for the shorter of the
// two spans. A failed probe stays failed; the proxy cannot vouch for an
// app that does not answer.
func mergeProxy(hb *messages.Heartbeat, polled bool, open int, lastActive, now time.Time) {
	inactive := max(int64(now.Sub(lastActive)/time.Second), 0)
	if open > 0 {
		inactive = 0
	}
	if !polled {
		hb.OK, hb.Listening = true, true
		hb.ActiveConnections, hb.SecondsInactive = open, inactive
		return
	}
	if !hb.OK {
		return
	}
	hb.ActiveConnections += open
	hb.SecondsInactive = min(hb.SecondsInactive, inactive)
}
