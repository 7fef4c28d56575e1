package prober

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/messages"
)

func activityMsg(t *testing.T, gw string, entries ...messages.SessionActivity) *nats.Msg {
	t.Helper()
	data, err := json.Marshal(messages.Activity{Gateway: gw, Time: time.Now(), Sessions: entries})
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Data: data}
}

// With several gateway replicas a session is busy if any says so, and
// idle since the latest byte any of them saw.
func TestActivityBookAddsUpReplicas(t *testing.T) {
	const interval = 50 * time.Millisecond
	id, stray := messages.NewSessionID(), messages.NewSessionID()
	book := newActivityBook(interval)
	want := func(s string) bool { return s == id }
	old := time.Now().Add(-time.Minute).UTC()
	recent := time.Now().Add(-3 * time.Second).UTC()
	book.record(activityMsg(t, "gw-a", messages.SessionActivity{SessionID: id, InFlight: 1, LastActive: old}), want)
	book.record(activityMsg(t, "gw-b", messages.SessionActivity{SessionID: id, Upgraded: 2, LastActive: recent},
		messages.SessionActivity{SessionID: stray, InFlight: 5, LastActive: recent}), want)
	since := time.Now().Add(-time.Hour)
	if open, last := book.view(id, since, time.Now()); open != 3 || !last.Equal(recent) {
		t.Errorf("view = %d open, last %s; want 3 open, last %s", open, last, recent)
	}
	if open, _ := book.view(stray, since, time.Now()); open != 0 {
		t.Errorf("a session this prober does not probe was kept: %d open", open)
	}
	// A replica that stops reporting has closed everything, or died.
	later := time.Now().Add(3 * interval)
	if open, last := book.view(id, since, later); open != 0 || !last.Equal(recent) {
		t.Errorf("after the reports lapsed: %d open, last %s", open, last)
	}
	book.forget(id)
	if _, last := book.view(id, since, time.Now()); !last.Equal(since) {
		t.Errorf("a forgotten session still has activity: %s", last)
	}
}

func TestMergeProxy(t *testing.T) {
	now := time.Now()
	app := messages.Heartbeat{OK: true, Listening: true, ActiveConnections: 0, SecondsInactive: 100}
	hb := app
	mergeProxy(&hb, true, 0, now.Add(-3*time.Second), now)
	if hb.SecondsInactive != 3 || hb.ActiveConnections != 0 {
		t.Errorf("idle app, recent proxy traffic: %+v", hb)
	}
	hb = app
	mergeProxy(&hb, true, 2, now.Add(-time.Hour), now)
	if hb.SecondsInactive != 0 || hb.ActiveConnections != 2 {
		t.Errorf("idle app, open requests: %+v", hb)
	}
	hb = messages.Heartbeat{SecondsInactive: 0}
	mergeProxy(&hb, false, 0, now.Add(-7*time.Second), now)
	if !hb.OK || hb.SecondsInactive != 7 {
		t.Errorf("proxy alone: %+v", hb)
	}
	hb = messages.Heartbeat{OK: false, Error: "refused"}
	mergeProxy(&hb, true, 3, now, now)
	if hb.OK || hb.ActiveConnections != 0 {
		t.Errorf("a failed probe was vouched for: %+v", hb)
	}
	hb = messages.Heartbeat{OK: true, ActiveConnections: 1, SecondsInactive: 0}
	mergeProxy(&hb, true, 0, now.Add(-time.Hour), now)
	if hb.SecondsInactive != 0 || hb.ActiveConnections != 1 {
		t.Errorf("busy app, idle proxy: %+v", hb)
	}
}
