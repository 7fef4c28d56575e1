package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/messages"
)

// faultEvents gathers lifecycle events two ways: a plain subscription that
// reconnects after NATS restarts, and replays of the event stream, which
// also holds what was published while the subscriber was away.
type faultEvents struct {
	nc   *nats.Conn
	subj messages.Subjects

	mu       sync.Mutex
	seen     map[string]bool
	byID     map[string][]messages.Event
	live     int
	replayed int
}

// faultWatchEvents subscribes to every session event on url and keeps the
// subscription across NATS restarts. The wildcard also matches the request
// subjects, as an operator's would, so while no provisioner runs the
// gateway's requests find this subscriber instead of "no responders" and
// end in 504 rather than 503; both are counted.
func faultWatchEvents(t *testing.T, url string, opts ...nats.Option) *faultEvents {
	t.Helper()
	nc, err := faultDial(url, "fault-events", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	l := &faultEvents{nc: nc, subj: subj, seen: map[string]bool{}, byID: map[string][]messages.Event{}}
	if _, err := nc.Subscribe(subj.Sessions(), func(m *nats.Msg) {
		if l.add(m.Data) {
			l.mu.Lock()
			l.live++
			l.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

// faultDial connects to NATS and never gives up reconnecting, like
// Spawner's own components.
func faultDial(url, name string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(url, append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond), nats.RetryOnFailedConnect(true)}, opts...)...)
}

// add records one event, once, and reports whether it was new. Requests
// on the same subjects have no event type and are skipped.
func (l *faultEvents) add(data []byte) bool {
	var e messages.Event
	if json.Unmarshal(data, &e) != nil || e.Type == "" || e.SessionID == "" {
		return false
	}
	key := fmt.Sprintf("%s|%s|%d|%s", e.SessionID, e.Type, e.Time.UnixNano(), e.Reason)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[key] {
		return false
	}
	l.seen[key] = true
	l.byID[e.SessionID] = append(l.byID[e.SessionID], e)
	return true
}

// replay reads the whole event stream and adds what the subscription
// missed while NATS was down.
func (l *faultEvents) replay(ctx context.Context) error {
	js, err := jetstream.New(l.nc)
	if err != nil {
		return err
	}
	stream, err := js.Stream(ctx, l.subj.EventStream())
	if err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("event stream info: %w", err)
	}
	for seq := info.State.FirstSeq; seq != 0 && seq <= info.State.LastSeq; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("event %d: %w", seq, err)
		}
		if l.add(msg.Data) {
			l.mu.Lock()
			l.replayed++
			l.mu.Unlock()
		}
	}
	return nil
}

// ended returns the event that ended the session: terminated, or failed.
func (l *faultEvents) ended(id string) (messages.Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.byID[id] {
		if e.Type == messages.EventTerminated || e.Type == messages.EventFailed {
			return e, true
		}
	}
	return messages.Event{}, false
}

// readyTimes returns when each session that became ready did so.
func (l *faultEvents) readyTimes() map[string]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]time.Time{}
	for id, evs := range l.byID {
		for _, e := range evs {
			if e.Type == messages.EventReady {
				out[id] = e.Time
			}
		}
	}
	return out
}

// dump writes every event, oldest first, one JSON object a line, so that a
// failed run can be read after the fact.
func (l *faultEvents) dump(path string) error {
	l.mu.Lock()
	var all []messages.Event
	for _, evs := range l.byID {
		all = append(all, evs...)
	}
	l.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, e := range all {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// counts returns how many events arrived live and how many only by replay.
func (l *faultEvents) counts() (live, replayed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live, l.replayed
}

// faultReport is what a fault run writes to artifacts/fault-report.json.
type faultReport struct {
	Test              string         `json:"test"`
	Time              time.Time      `json:"time"`
	ChurnSeconds      float64        `json:"churn_seconds"`
	SettleSeconds     float64        `json:"settle_seconds"`
	SessionsAccepted  int            `json:"sessions_accepted"`
	AcceptedBy        map[string]int `json:"accepted_by"`
	Kills             map[string]int `json:"kills"`
	KillTimeline      []string       `json:"kill_timeline"`
	HTTPStatus        map[string]int `json:"http_status"`
	HTTP5xx           map[string]int `json:"http_5xx"`
	HTTPTimeouts      int            `json:"http_timeouts"`
	HTTPConnErrors    int            `json:"http_connection_errors"`
	NATSSpawnNoReply  int            `json:"nats_spawn_no_reply"`
	NATSSpawnErrors   map[string]int `json:"nats_spawn_errors"`
	WebSocketOK       int            `json:"websocket_ok"`
	WebSocketFailed   int            `json:"websocket_failed"`
	WebSocketTimeouts int            `json:"websocket_timeouts"`
	// SlowestSeconds is the longest answer of each kind of operation, and
	// SlowOperations lists every one over 5s, at its time into the churn.
	SlowestSeconds map[string]float64 `json:"slowest_seconds"`
	SlowOperations []string           `json:"slow_operations"`
	EndedBy        map[string]int     `json:"ended_by"`
	LiveAtEnd      int                `json:"live_at_end"`
	EventsLive     int                `json:"events_live"`
	EventsReplayed int                `json:"events_replayed_only"`
	// The probe figures, on the cluster run: how many sessions were
	// probed, their longest gaps between two heartbeats, and how long
	// after its ready event each was first probed.
	ProbeIntervalSeconds float64            `json:"probe_interval_seconds,omitempty"`
	SessionsProbed       int                `json:"sessions_probed,omitempty"`
	HeartbeatsHeard      int                `json:"heartbeats_heard,omitempty"`
	LongestProbeGaps     []string           `json:"longest_probe_gaps,omitempty"`
	FirstProbeSeconds    map[string]float64 `json:"first_probe_seconds,omitempty"`
	// AppsOutlived lists apps seen running a second or more after their
	// session's end event.
	AppsOutlived    []string `json:"apps_outlived_session,omitempty"`
	SessionsLost    int      `json:"sessions_lost"`
	LeakedProcesses int      `json:"leaked_processes"`
	AppsAfterStop   int      `json:"app_processes_after_stop"`
}
