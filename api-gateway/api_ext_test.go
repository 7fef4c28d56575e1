package gateway_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/messages"
)

func TestInitRejectsBadBodiesBeforeNATS(t *testing.T) {
	s := newSite(t)
	marker := messages.NewSessionID()
	seen := s.respond(t, s.subj.Sessions(), func([]byte) any {
		return messages.SpawnReply{SessionID: marker, URL: "u", Status: messages.StatusReady, Created: true}
	})
	for _, tc := range []struct {
		name   string
		body   []byte
		status int
		code   messages.ErrorCode
	}{
		{"malformed", []byte(`{"key":`), http.StatusBadRequest, messages.CodeBadRequest},
		{"unknown field", []byte(`{"image":"x"}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"trailing data", []byte(`{} {}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"reserved env", []byte(`{"env":{"SPAWNER_API_TOKENS":"x"}}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"negative timeout", []byte(`{"idle_timeout_seconds":-1}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"bad label", []byte(`{"labels":{"spawner.dev/owner":"me"}}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"field in another case", []byte(`{"Key":"k"}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"ENV", []byte(`{"ENV":{"A":"b"}}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"invalid UTF-8 in a key", []byte("{\"key\":\"\xff\"}"), http.StatusBadRequest, messages.CodeBadRequest},
		{"lone surrogate", []byte(`{"key":"\udc00"}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"null body", []byte(`null`), http.StatusBadRequest, messages.CodeBadRequest},
		{"null value", []byte(`{"labels":null}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"duplicate key", []byte(`{"key":"a","key":"b"}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"NUL in key", []byte(`{"key":"a\u0000"}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"NUL in label", []byte(`{"labels":{"a":"\u0000"}}`), http.StatusBadRequest, messages.CodeBadRequest},
		{"over 1 MiB", append([]byte(`{"key":"`), bytes.Repeat([]byte("k"), messages.MaxRequestBytes)...), http.StatusRequestEntityTooLarge, messages.CodeTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(t, http.MethodPost, "/init", bytes.NewReader(tc.body), "Content-Type", "application/json")
			if r.status != tc.status {
				t.Errorf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if e := apiError(t, r); e.Code != tc.code {
				t.Errorf("code %q, want %q", e.Code, tc.code)
			}
		})
	}
	// The gateway publishes in order on one connection, so if any bad body
	// had been sent, it would arrive before this good one.
	r := s.do(t, http.MethodPost, "/init", strings.NewReader(`{"request_id":"good"}`))
	if r.status != http.StatusCreated {
		t.Fatalf("good request: %d %s", r.status, r.body)
	}
	msgs := seen.all()
	if len(msgs) != 1 || !bytes.Contains(msgs[0], []byte(`"good"`)) {
		t.Errorf("NATS saw %d messages, want only the good request: %q", len(msgs), msgs)
	}
}

func TestInitWithoutProvisioner(t *testing.T) {
	s := newSite(t)
	r := s.do(t, http.MethodPost, "/init", nil)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", r.status, r.body)
	}
	if e := apiError(t, r); e.Code != messages.CodeUnavailable {
		t.Errorf("code %q, want unavailable", e.Code)
	}
}

func TestInitCreated(t *testing.T) {
	s := newSite(t)
	id := messages.NewSessionID()
	reqs := s.respond(t, s.subj.Requested(), func(data []byte) any {
		var req messages.SpawnRequest
		_ = json.Unmarshal(data, &req)
		return messages.SpawnReply{SessionID: id, URL: "https://gw.example/p/" + id + "/", Status: messages.StatusReady,
			Created: req.Key != "existing", Key: req.Key}
	})
	body := `{"key":"user-1","env":{"GREETING":"hi"},"labels":{"team":"a"},"idle_timeout_seconds":30,"request_id":"r1"}`
	r := s.do(t, http.MethodPost, "/init", strings.NewReader(body))
	if r.status != http.StatusCreated {
		t.Fatalf("status %d, want 201: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"session_id": id, "url": "https://gw.example/p/" + id + "/", "status": "ready", "created": true, "key": "user-1"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, ok := got["error"]; ok || len(got) != len(want) {
		t.Errorf("body %s has fields beyond %v", r.body, want)
	}
	// The provisioner received what the client asked for.
	var sent messages.SpawnRequest
	if err := json.Unmarshal(reqs.all()[0], &sent); err != nil {
		t.Fatal(err)
	}
	if sent.Key != "user-1" || sent.Env["GREETING"] != "hi" || sent.Labels["team"] != "a" || sent.IdleTimeoutSeconds != 30 || sent.RequestID != "r1" {
		t.Errorf("provisioner got %+v", sent)
	}

	r = s.do(t, http.MethodPost, "/init", strings.NewReader(`{"key":"existing"}`))
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"created":false`)) {
		t.Errorf("existing session: %d %s, want 200 with created false", r.status, r.body)
	}
}

func TestInitMapsProvisionerErrors(t *testing.T) {
	s := newSite(t)
	s.respond(t, s.subj.Requested(), func(data []byte) any {
		var req messages.SpawnRequest
		_ = json.Unmarshal(data, &req)
		if req.Key == "garbage" {
			return []byte("not json")
		}
		return messages.SpawnReply{Error: messages.Errorf(messages.ErrorCode(req.Key), "it went wrong")}
	})
	for code, status := range map[messages.ErrorCode]int{
		messages.CodeBadRequest:  http.StatusBadRequest,
		messages.CodeTooLarge:    http.StatusRequestEntityTooLarge,
		messages.CodeNotFound:    http.StatusNotFound,
		messages.CodeUnavailable: http.StatusServiceUnavailable,
		messages.CodeTimeout:     http.StatusGatewayTimeout,
		messages.CodeTooMany:     http.StatusTooManyRequests,
		messages.CodeSpawnFailed: http.StatusBadGateway,
		messages.CodeInternal:    http.StatusInternalServerError,
		"something_new":          http.StatusInternalServerError,
	} {
		r := s.do(t, http.MethodPost, "/init", strings.NewReader(`{"key":"`+string(code)+`"}`))
		if r.status != status {
			t.Errorf("%s: status %d, want %d", code, r.status, status)
		}
		e := apiError(t, r)
		if e.Code != code || e.Message != "it went wrong" {
			t.Errorf("%s: error %+v", code, e)
		}
		retry := r.header.Get("Retry-After")
		if (status == http.StatusTooManyRequests) != (retry != "") {
			t.Errorf("%s: Retry-After %q", code, retry)
		}
	}
	r := s.do(t, http.MethodPost, "/init", strings.NewReader(`{"key":"garbage"}`))
	if r.status != http.StatusInternalServerError || apiError(t, r).Code != messages.CodeInternal {
		t.Errorf("undecodable reply: %d %s", r.status, r.body)
	}
}

func TestListAndGetSessions(t *testing.T) {
	s := newSite(t)
	r := s.do(t, http.MethodGet, "/sessions", nil)
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"count":0`)) {
		t.Fatalf("empty list: %d %s", r.status, r.body)
	}
	a := s.addReady(t, "127.0.0.1:1")
	time.Sleep(2 * time.Millisecond) // Distinct creation times order the list.
	b := s.addReady(t, "127.0.0.1:2")
	s.awaitListed(t, b) // The watch delivers in order, so a is in the list too.
	hb := messages.Heartbeat{SessionID: a, Time: time.Now().UTC().Truncate(time.Second), OK: true, ActiveConnections: 3, SecondsInactive: 4, Listening: true}
	data, _ := json.Marshal(hb)
	// The gateway keeps the newest heartbeat; wait until it shows.
	deadline := time.Now().Add(patience)
	var view map[string]any
	for {
		if err := s.peer.Publish(s.subj.Heartbeat(a), data); err != nil {
			t.Fatal(err)
		}
		r = s.do(t, http.MethodGet, "/sessions/"+a, nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET /sessions/%s: %d %s", a, r.status, r.body)
		}
		view = map[string]any{}
		_ = json.Unmarshal(r.body, &view)
		if view["active_connections"] != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if view["session_id"] != a || view["status"] != "ready" || view["active_connections"] != float64(3) ||
		view["seconds_inactive"] != float64(4) || view["last_activity"] == nil || view["last_probe"] == nil {
		t.Errorf("session view = %v", view)
	}
	if _, ok := view["env"]; ok {
		t.Error("the session view shows env")
	}

	r = s.do(t, http.MethodGet, "/sessions", nil)
	var list struct {
		Sessions []map[string]any `json:"sessions"`
		Count    int              `json:"count"`
	}
	if err := json.Unmarshal(r.body, &list); err != nil || r.status != http.StatusOK {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	if list.Count != 2 || len(list.Sessions) != 2 || list.Sessions[0]["session_id"] != a || list.Sessions[1]["session_id"] != b {
		t.Errorf("list = %s, want %s then %s", r.body, a, b)
	}

	for _, id := range []string{messages.NewSessionID(), "nope", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"} {
		r := s.do(t, http.MethodGet, "/sessions/"+id, nil)
		if r.status != http.StatusNotFound || apiError(t, r).Code != messages.CodeNotFound {
			t.Errorf("GET /sessions/%s: %d %s", id, r.status, r.body)
		}
	}
}

func TestDeleteSession(t *testing.T) {
	s := newSite(t)
	found, missing, failing := messages.NewSessionID(), messages.NewSessionID(), messages.NewSessionID()
	stops := s.respond(t, s.subj.Stop(), func(data []byte) any {
		var req messages.StopRequest
		_ = json.Unmarshal(data, &req)
		switch req.SessionID {
		case found:
			return messages.StopReply{Found: true}
		case failing:
			return messages.StopReply{Found: true, Error: messages.Errorf(messages.CodeUnavailable, "backend down")}
		}
		return messages.StopReply{}
	})
	r := s.do(t, http.MethodDelete, "/sessions/"+found, nil)
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"status":"terminated"`)) || !bytes.Contains(r.body, []byte(found)) {
		t.Errorf("delete: %d %s", r.status, r.body)
	}
	var req messages.StopRequest
	if err := json.Unmarshal(stops.all()[0], &req); err != nil || req.SessionID != found || req.Reason != messages.ReasonDeleted {
		t.Errorf("stop request = %+v, %v", req, err)
	}
	r = s.do(t, http.MethodDelete, "/sessions/"+missing, nil)
	if r.status != http.StatusNotFound || apiError(t, r).Code != messages.CodeNotFound {
		t.Errorf("delete of an unknown session: %d %s", r.status, r.body)
	}
	r = s.do(t, http.MethodDelete, "/sessions/"+failing, nil)
	if r.status != http.StatusServiceUnavailable || apiError(t, r).Code != messages.CodeUnavailable {
		t.Errorf("delete that failed: %d %s", r.status, r.body)
	}
	before := len(stops.all())
	r = s.do(t, http.MethodDelete, "/sessions/not-an-id", nil)
	if r.status != http.StatusNotFound || apiError(t, r).Code != messages.CodeNotFound {
		t.Errorf("delete of a bad id: %d %s", r.status, r.body)
	}
	// Requests on one connection are ordered: a stop for the bad id
	// would have reached the responder before this one.
	s.do(t, http.MethodDelete, "/sessions/"+missing, nil)
	if n := len(stops.all()) - before; n != 1 {
		t.Errorf("%d stop requests for a bad id and a good one, want 1", n)
	}
}

func TestDeleteWithoutProvisioner(t *testing.T) {
	s := newSite(t)
	r := s.do(t, http.MethodDelete, "/sessions/"+messages.NewSessionID(), nil)
	if r.status != http.StatusServiceUnavailable || apiError(t, r).Code != messages.CodeUnavailable {
		t.Errorf("delete with no provisioner: %d %s", r.status, r.body)
	}
}

func TestUnknownRouteIsJSON404(t *testing.T) {
	s := newSite(t)
	for _, p := range []string{"/nope", "/init/x", "/sessions/a/b"} {
		r := s.do(t, http.MethodGet, p, nil)
		if r.status != http.StatusNotFound || apiError(t, r).Code != messages.CodeNotFound {
			t.Errorf("GET %s: %d %s", p, r.status, r.body)
		}
	}
	if r := s.do(t, http.MethodGet, "/healthz", nil); r.status != http.StatusOK {
		t.Errorf("healthz: %d", r.status)
	}
}

// An operator watching "spawner.session.>" must not hide the absence of
// provisioners: /init still answers 503 at once.
func TestInitWithoutProvisionerDespiteWildcardSubscriber(t *testing.T) {
	s := newSite(t)
	sub, err := s.peer.Subscribe(s.subj.Sessions(), func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = s.peer.Flush()
	began := time.Now()
	r := s.do(t, http.MethodPost, "/init", strings.NewReader(""))
	if r.status != http.StatusServiceUnavailable || apiError(t, r).Code != messages.CodeUnavailable {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("the 503 took %s: the wildcard subscriber hid the missing provisioner", took)
	}
}
