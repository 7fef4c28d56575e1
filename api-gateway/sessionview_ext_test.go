package gateway_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// Every /sessions entry has the same fields, probed or not: the activity
// fields are null until the first probe, and "probed" says which it is.
func TestSessionEntriesKeepTheirShape(t *testing.T) {
	s := newSite(t)
	fresh := s.addReady(t, "127.0.0.1:1")
	healthy := s.addReady(t, "127.0.0.1:2")
	failing := s.addReady(t, "127.0.0.1:3")
	now := time.Now().UTC().Truncate(time.Second)
	beats := map[string]messages.Heartbeat{
		healthy: {SessionID: healthy, Time: now, OK: true, ActiveConnections: 1, SecondsInactive: 2, Listening: true},
		failing: {SessionID: failing, Time: now, Error: "/status answered 500 Internal Server Error", FailingSince: now},
	}
	var list struct {
		Sessions []map[string]any `json:"sessions"`
	}
	byID := map[string]map[string]any{}
	deadline := time.Now().Add(patience)
	for {
		for id, hb := range beats {
			data, _ := json.Marshal(hb)
			if err := s.peer.Publish(s.subj.Heartbeat(id), data); err != nil {
				t.Fatal(err)
			}
		}
		r := s.do(t, http.MethodGet, "/sessions", nil)
		if err := json.Unmarshal(r.body, &list); err != nil || r.status != http.StatusOK {
			t.Fatalf("list: %d %s", r.status, r.body)
		}
		for _, e := range list.Sessions {
			byID[e["session_id"].(string)] = e
		}
		if byID[healthy]["probed"] == true && byID[failing]["probed"] == true || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	keys := slices.Sorted(maps.Keys(byID[fresh]))
	for _, id := range []string{healthy, failing} {
		if got := slices.Sorted(maps.Keys(byID[id])); !slices.Equal(got, keys) {
			t.Errorf("entry fields differ:\nunprobed %v\n%s %v", keys, id, got)
		}
	}
	want := map[string]map[string]any{
		fresh:   {"probed": false, "active_connections": nil, "seconds_inactive": nil, "last_activity": nil, "last_probe": nil, "probe_error": nil},
		healthy: {"probed": true, "active_connections": float64(1), "seconds_inactive": float64(2), "probe_error": nil},
		failing: {"probed": true, "active_connections": nil, "seconds_inactive": nil, "last_activity": nil, "probe_error": "/status answered 500 Internal Server Error"},
	}
	for id, fields := range want {
		for k, v := range fields {
			got, ok := byID[id][k]
			if !ok || got != v {
				t.Errorf("session %s: %s = %v (present %v), want %v", id, k, got, ok, v)
			}
		}
	}
	if byID[healthy]["last_probe"] == nil || byID[healthy]["last_activity"] == nil || byID[failing]["last_probe"] == nil {
		t.Errorf("probed sessions lack their times: %v %v", byID[healthy], byID[failing])
	}
}
