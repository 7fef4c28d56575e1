package messages_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var (
	goldenTime = time.Date(2030, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	goldenID   = "abcdefghijklmnopqrstuvwxyz"
)

// goldenCases is every public message shape, so a change to the wire format
// shows up as a diff in testdata that a reviewer has to accept.
func goldenCases() map[string]any {
	cases := map[string]any{
		"spawn_request_empty": &messages.SpawnRequest{},
		"spawn_request_full": &messages.SpawnRequest{
			App: "files", RequestID: "req-1", Key: "user-42",
			Env:                map[string]string{"GREETING": "hello", "LANG": "C.UTF-8"},
			Labels:             map[string]string{"team": "docs", "example.com/tier": "free"},
			IdleTimeoutSeconds: 300, MaxLifetimeSeconds: 3600, Pool: "eu-1",
		},
		"spawn_request_placement": &messages.SpawnRequest{
			Key: "user-42", Placement: map[string]string{"region": "eu", "gpu": "true"},
		},
		"pool_info": &messages.PoolInfo{
			Pool: "eu-1", Labels: map[string]string{"region": "eu", "gpu": "true"}, Provisioner: "prov-a",
		},
		"spawn_reply_ok": &messages.SpawnReply{
			SessionID: goldenID, URL: "https://spawner.example/p/" + goldenID + "/",
			Status: messages.StatusReady, Created: true, Key: "user-42", Token: "tok",
		},
		"spawn_reply_existing": &messages.SpawnReply{
			SessionID: goldenID, URL: "https://spawner.example/p/" + goldenID + "/",
			Status: messages.StatusReady, Created: false, Key: "user-42",
		},
		"spawn_reply_error": &messages.SpawnReply{
			Error: &messages.Error{Code: messages.CodeTooMany, Message: "10 live sessions, the limit is 10"},
		},
		"stop_request":     &messages.StopRequest{SessionID: goldenID, Reason: messages.ReasonIdle, Detail: "inactive for 301s"},
		"stop_reply_found": &messages.StopReply{Found: true},
		"stop_reply_error": &messages.StopReply{
			Error: &messages.Error{Code: messages.CodeUnavailable, Message: "registry down"},
		},
		"heartbeat_ok": &messages.Heartbeat{
			SessionID: goldenID, Time: goldenTime, OK: true,
			ActiveConnections: 2, SecondsInactive: 17, Listening: true, LatencySeconds: 0.0015,
		},
		"heartbeat_failing": &messages.Heartbeat{
			SessionID: goldenID, Time: goldenTime, Error: "/status answered 500 Internal Server Error",
			FailingSince: goldenTime.Add(-30 * time.Second), LatencySeconds: 0.25,
		},
		"app_status": &messages.AppStatus{ActiveConnections: 3, SecondsInactive: 12, Listening: true},
		"session_creating": &messages.Session{
			ID: goldenID, App: "demo", Key: "user-42", RequestID: "req-1", Status: messages.StatusCreating,
			URL: "https://spawner.example/p/" + goldenID + "/", Labels: map[string]string{"team": "docs"},
			Backend: "process", Pool: "eu-1", Owner: "prov-a", IdleTimeoutSeconds: 300, CreatedAt: goldenTime,
		},
		"session_stopping": &messages.Session{
			ID: goldenID, Status: messages.StatusStopping, URL: "https://spawner.example/p/" + goldenID + "/",
			Backend: "kube", Upstream: "10.0.0.7:8080", StatusURL: "http://10.0.0.7:8081/status",
			Owner: "prov-b", TokenHash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
			IdleTimeoutSeconds: 300, MaxLifetimeSeconds: 7200, CreatedAt: goldenTime,
			ReadyAt: goldenTime.Add(time.Second), StoppingAt: goldenTime.Add(time.Hour), StopReason: messages.ReasonIdle,
		},
	}
	// The views GET /sessions shows: before any probe, after a good one
	// and after a failed one. Every field is present in each.
	viewed := messages.Session{ID: goldenID, App: "demo", Status: messages.StatusReady,
		URL: "https://spawner.example/p/" + goldenID + "/", Backend: "process", Owner: "prov-a",
		IdleTimeoutSeconds: 300, CreatedAt: goldenTime, ReadyAt: goldenTime.Add(time.Second)}
	conns, idle, probed, lastActive, failure := 2, int64(17), goldenTime.Add(time.Minute), goldenTime.Add(43*time.Second), "/status answered 500"
	cases["session_view_unprobed"] = &messages.SessionView{Session: viewed}
	cases["session_view_probed"] = &messages.SessionView{Session: viewed, Probed: true,
		ActiveConnections: &conns, SecondsInactive: &idle, LastActivity: &lastActive, LastProbe: &probed}
	cases["session_view_failing"] = &messages.SessionView{Session: viewed, Probed: true, LastProbe: &probed, ProbeError: &failure}
	for _, et := range messages.EventTypes {
		ev := &messages.Event{Type: et, SessionID: goldenID, Time: goldenTime, App: "demo", RequestID: "req-1", Key: "user-42",
			Backend: "process", Owner: "prov-a", Pool: "eu-1"}
		switch et {
		case messages.EventCreating:
			ev.URL, ev.Labels = "https://spawner.example/p/"+goldenID+"/", map[string]string{"team": "docs"}
		case messages.EventReady:
			ev.URL, ev.Upstream, ev.SpawnSeconds = "https://spawner.example/p/"+goldenID+"/", "127.0.0.1:40001", 0.42
		case messages.EventFailed:
			ev.Reason, ev.Error, ev.SpawnSeconds = messages.ReasonFailed, "the app exited before it was ready", 0.1
		case messages.EventStopping:
			ev.Reason = messages.ReasonLifetime
		case messages.EventTerminated:
			ev.Reason, ev.Error, ev.LifetimeSeconds = messages.ReasonIdle, "inactive for 301s", 3601.5
		}
		cases["event_"+string(et)] = ev
	}
	return cases
}

func TestGoldenJSON(t *testing.T) {
	for name, v := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			got, err := json.MarshalIndent(v, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./messages -run TestGoldenJSON -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s changed; the wire format is public.\ngot:\n%s\nwant:\n%s", path, got, want)
			}
			// The golden file must decode back to the same value, so the
			// documented shape is also what readers accept.
			back := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if err := json.Unmarshal(want, back); err != nil {
				t.Fatalf("decode %s: %v", path, err)
			}
			if !reflect.DeepEqual(back, v) {
				t.Errorf("%s decodes to %+v, want %+v", path, back, v)
			}
			// Spawn requests are read by a stricter decoder; the documented
			// shape must pass it too.
			if req, ok := v.(*messages.SpawnRequest); ok {
				strict, err := messages.DecodeSpawnRequest(want)
				if err != nil || !reflect.DeepEqual(strict, *req) {
					t.Errorf("DecodeSpawnRequest(%s) = %+v, %v; want %+v", path, strict, err, *req)
				}
			}
		})
	}
}

func TestGoldenFilesHaveCases(t *testing.T) {
	cases := goldenCases()
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		name = name[:len(name)-len(".json")]
		if _, ok := cases[name]; !ok {
			t.Errorf("%s has no case in goldenCases; delete it or add one", f)
		}
	}
}

func TestSpawnReplyErrorOmitsSession(t *testing.T) {
	data, err := json.Marshal(messages.SpawnReply{Error: messages.Errorf(messages.CodeBadRequest, "key: %s", "too long")})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"session_id", "url", "status", "key", "token"} {
		if _, ok := m[k]; ok {
			t.Errorf("an error reply carries %q: %s", k, data)
		}
	}
	if got := m["error"].(map[string]any)["message"]; got != "key: too long" {
		t.Errorf("message = %v", got)
	}
}

func TestSessionOmitsEnv(t *testing.T) {
	if _, ok := reflect.TypeOf(messages.Session{}).FieldByName("Env"); ok {
		t.Fatal("Session has an Env field; records are readable by every component and env may hold secrets")
	}
}

func TestSessionLive(t *testing.T) {
	for st, want := range map[messages.Status]bool{
		messages.StatusCreating: true, messages.StatusReady: true,
		messages.StatusStopping: false, messages.StatusTerminated: false,
	} {
		if got := (messages.Session{Status: st}).Live(); got != want {
			t.Errorf("Live() with %s = %v, want %v", st, got, want)
		}
	}
}
