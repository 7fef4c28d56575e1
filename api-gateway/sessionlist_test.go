package gateway

import (
	"bytes"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// TestSessionListMatchesTheViews holds the pre-encoded list to what
// encoding messages.SessionViews writes, byte for byte, through every kind of
// heartbeat and through changes, replacements and deletions.
func TestSessionListMatchesTheViews(t *testing.T) {
	g, err := New(testConfig(time.Second), Deps{Registry: registry.New(nil)})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC)
	var sessions []messages.Session
	for i := range 6 {
		s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, URL: "http://gw/p/x/?a=<b>&c",
			Upstream: "127.0.0.1:1", Backend: "process", Owner: "p", Key: "ключ <&>", IdleTimeoutSeconds: 60,
			CreatedAt: base.Add(time.Duration(5-i) * time.Second), Labels: map[string]string{"team": "blue", "b": "x"}}
		sessions = append(sessions, s)
		g.applyChange(registry.Change{ID: s.ID, Session: s})
	}
	g.beats.beats[sessions[0].ID] = messages.Heartbeat{SessionID: sessions[0].ID, Time: base, OK: true, ActiveConnections: 2, SecondsInactive: 17}
	g.beats.beats[sessions[1].ID] = messages.Heartbeat{SessionID: sessions[1].ID, Time: base, Error: `dial tcp: refused "<x>"`}
	g.beats.beats[sessions[2].ID] = messages.Heartbeat{SessionID: sessions[2].ID, Time: base}
	g.beats.beats[sessions[3].ID] = messages.Heartbeat{SessionID: sessions[3].ID, Time: base, OK: true}

	check := func(when string) {
		t.Helper()
		var views []messages.SessionView
		for _, s := range sessions {
			views = append(views, g.view(s))
		}
		sort.Slice(views, func(i, j int) bool { return views[i].CreatedAt.Before(views[j].CreatedAt) })
		if views == nil {
			views = []messages.SessionView{}
		}
		want := httptest.NewRecorder()
		writeJSON(want, 200, map[string]any{"sessions": views, "count": len(views)})
		got := httptest.NewRecorder()
		g.writeSessionList(got)
		if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
			t.Errorf("%s: list\n%s\nwant\n%s", when, got.Body, want.Body)
		}
		if got.Header().Get("Content-Type") != "application/json" || got.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s: headers %v", when, got.Header())
		}
	}
	check("at first")

	sessions[4].Status = messages.StatusStopping
	g.applyChange(registry.Change{ID: sessions[4].ID, Session: sessions[4]})
	check("after a status change")

	sessions[5].CreatedAt = base.Add(time.Hour)
	g.applyChange(registry.Change{ID: sessions[5].ID, Session: sessions[5]})
	check("after a change of order")

	g.applyChange(registry.Change{ID: sessions[0].ID, Deleted: true})
	sessions = sessions[1:]
	check("after a delete")

	for _, s := range sessions {
		g.applyChange(registry.Change{ID: s.ID, Deleted: true})
	}
	sessions = nil
	check("when empty")
}

// A changed record that keeps its place replaces the entry in the sorted
// list; a request reading its snapshot at that moment must not see the
// write (go test -race fails this when the swap is done in place).
func TestSessionListSnapshotIsNotWrittenUnderItsReader(t *testing.T) {
	l := newSessionList()
	created := time.Now()
	var ids []string
	for range 50 {
		s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady, CreatedAt: created}
		ids = append(ids, s.ID)
		l.apply(registry.Change{ID: s.ID, Session: s})
	}
	l.snapshot()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			id := ids[i%len(ids)]
			l.apply(registry.Change{ID: id, Session: messages.Session{ID: id, Status: messages.StatusReady, CreatedAt: created, Upstream: "a"}})
		}
	}()
	for {
		select {
		case <-done:
			if n := len(l.snapshot()); n != len(ids) {
				t.Fatalf("%d sessions listed, want %d", n, len(ids))
			}
			return
		default:
		}
		for _, ls := range l.snapshot() {
			if ls.id == "" {
				t.Fatal("an entry without an id")
			}
		}
	}
}
