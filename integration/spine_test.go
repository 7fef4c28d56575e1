package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/spawnerhq/spawner/messages"
)

func TestSpawnServeAndIdleReap(t *testing.T) {
	cfg := testConfig(t)
	cfg.Provisioner.IdleTimeout = 2 * time.Second
	h := start(t, cfg)
	ev := h.watchEvents(t)

	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", "", &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	if !rep.Created || rep.Status != messages.StatusReady || rep.URL != h.BaseURL+"/p/"+rep.SessionID+"/" {
		t.Fatalf("unexpected reply %+v", rep)
	}
	if !messages.ValidSessionID(rep.SessionID) {
		t.Fatalf("session id %q is not 128 random bits in base32", rep.SessionID)
	}
	code, page := get(t, rep.URL)
	if code != http.StatusOK || !strings.Contains(page, "<html") {
		t.Fatalf("GET %s: %d %.200q", rep.URL, code, page)
	}
	code, body := get(t, rep.URL+"status")
	var st messages.AppStatus
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || !st.Listening {
		t.Fatalf("GET status: %d %q", code, body)
	}
	if len(appProcesses(t, rep.SessionID)) == 0 {
		t.Fatal("no app process runs for the session")
	}
	code, body = get(t, h.BaseURL+"/sessions/"+rep.SessionID)
	if code != http.StatusOK || !strings.Contains(body, `"status":"ready"`) || !strings.Contains(body, `"upstream":"127.0.0.1:`) {
		t.Fatalf("GET /sessions/{id}: %d %s", code, body)
	}

	eventually(t, 15*time.Second, "the idle session to be reaped", func() bool {
		code, _ := get(t, h.BaseURL+"/sessions/"+rep.SessionID)
		return code == http.StatusNotFound
	})
	eventually(t, 5*time.Second, "the terminated event", func() bool { return len(ev.find(rep.SessionID, messages.EventTerminated)) == 1 })
	if got := ev.find(rep.SessionID, messages.EventTerminated)[0].Reason; got != messages.ReasonIdle {
		t.Fatalf("terminated with reason %q, want idle", got)
	}
	if len(ev.find(rep.SessionID, messages.EventReady)) != 1 || len(ev.find(rep.SessionID, messages.EventCreating)) != 1 {
		t.Fatal("creating and ready events were not each published once")
	}
	if code, body := get(t, rep.URL); code != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Fatalf("proxy to an ended session: %d %s", code, body)
	}
	eventually(t, 5*time.Second, "the app process to be gone", func() bool { return len(appProcesses(t, rep.SessionID)) == 0 })
}

func TestSpawnOverNATS(t *testing.T) {
	h := start(t, testConfig(t))
	ev := h.watchEvents(t)

	msg, err := h.NC.Request(h.Subj.Requested(), []byte(`{}`), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep messages.SpawnReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.Error != nil || !rep.Created {
		t.Fatalf("reply %s: %v", msg.Data, err)
	}
	if code, _ := get(t, h.BaseURL+"/sessions/"+rep.SessionID); code != http.StatusOK {
		t.Fatalf("the gateway does not know the session spawned over NATS: %d", code)
	}

	// A request with no reply subject is served too; its request_id finds it.
	if err := h.NC.Publish(h.Subj.Requested(), []byte(`{"request_id":"fire-and-forget-1"}`)); err != nil {
		t.Fatal(err)
	}
	var ready messages.Event
	eventually(t, 20*time.Second, "a ready event carrying the request_id", func() bool {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		for _, e := range ev.all {
			if e.Type == messages.EventReady && e.RequestID == "fire-and-forget-1" {
				ready = e
				return true
			}
		}
		return false
	})
	if code, _ := get(t, ready.URL+"status"); code != http.StatusOK {
		t.Fatalf("session from a published request is not routable: %d", code)
	}

	bad, err := h.NC.Request(h.Subj.Requested(), []byte(`{"idle_timeout_seconds":-1}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var badRep messages.SpawnReply
	if json.Unmarshal(bad.Data, &badRep) != nil || badRep.Error == nil || badRep.Error.Code != messages.CodeBadRequest {
		t.Fatalf("bad request over NATS answered %s", bad.Data)
	}
}

func TestKeyGetOrCreateUnderRace(t *testing.T) {
	h := start(t, testConfig(t))
	const n = 20
	var wg sync.WaitGroup
	replies := make([]messages.SpawnReply, n)
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() { codes[i] = post(t, h.BaseURL+"/init", `{"key":"doc-42"}`, &replies[i]) })
	}
	wg.Wait()
	created := 0
	for i, rep := range replies {
		if codes[i] != http.StatusCreated && codes[i] != http.StatusOK {
			t.Fatalf("request %d: %d %+v", i, codes[i], rep)
		}
		if rep.SessionID != replies[0].SessionID {
			t.Fatalf("key gave two sessions: %s and %s", rep.SessionID, replies[0].SessionID)
		}
		if rep.Created {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d replies say created, want 1", created)
	}
	if n := len(appProcesses(t, replies[0].SessionID)); n == 0 {
		t.Fatal("the keyed session has no process")
	}
	// Once it ends, the key is free for a new session.
	req, _ := http.NewRequest(http.MethodDelete, h.BaseURL+"/sessions/"+replies[0].SessionID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	resp.Body.Close()
	var again messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{"key":"doc-42"}`, &again); code != http.StatusCreated || again.SessionID == replies[0].SessionID {
		t.Fatalf("after delete the key should spawn anew: %d %+v", code, again)
	}
}

func TestFiftyParallelInits(t *testing.T) {
	h := start(t, testConfig(t))
	ev := h.watchEvents(t)
	const n = 50
	var wg sync.WaitGroup
	replies := make([]messages.SpawnReply, n)
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() { codes[i] = post(t, h.BaseURL+"/init", "", &replies[i]) })
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, rep := range replies {
		if codes[i] != http.StatusCreated || seen[rep.SessionID] {
			t.Fatalf("request %d: %d %+v (duplicate: %v)", i, codes[i], rep, seen[rep.SessionID])
		}
		seen[rep.SessionID] = true
		if code, _ := get(t, rep.URL+"status"); code != http.StatusOK {
			t.Fatalf("session %d is not routable: %d", i, code)
		}
	}
	ids := make([]string, 0, n)
	for id := range seen {
		ids = append(ids, id)
		req, _ := http.NewRequest(http.MethodDelete, h.BaseURL+"/sessions/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE %s: %v %v", id, resp, err)
		}
		resp.Body.Close()
		// The event is published before the reply, but may reach this
		// subscriber a moment after it.
		eventually(t, 5*time.Second, "the terminated event", func() bool { return len(ev.find(id, messages.EventTerminated)) == 1 })
		if got := ev.find(id, messages.EventTerminated); got[0].Reason != messages.ReasonDeleted {
			t.Fatalf("session %s: terminated events %+v", id, got)
		}
	}
	eventually(t, 10*time.Second, "every app process to exit", func() bool { return len(appProcesses(t, ids...)) == 0 })
	req, _ := http.NewRequest(http.MethodDelete, h.BaseURL+"/sessions/"+ids[0], nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("second DELETE should be 404: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestWebSocketKeepsSessionAlive(t *testing.T) {
	cfg := testConfig(t)
	cfg.Provisioner.IdleTimeout = 2 * time.Second
	h := start(t, cfg)
	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", "", &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(rep.URL, "http") + "ws"
	alice, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	defer alice.CloseNow()
	bob, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.CloseNow()
	if err := alice.Write(ctx, websocket.MessageText, []byte(`{"type":"text","text":"hello from alice","version":0}`)); err != nil {
		t.Fatal(err)
	}
	for {
		_, data, err := bob.Read(ctx)
		if err != nil {
			t.Fatalf("bob never saw alice's edit: %v", err)
		}
		if strings.Contains(string(data), "hello from alice") {
			break
		}
	}
	// With sockets open the session outlives its idle timeout several times.
	time.Sleep(3 * cfg.Provisioner.IdleTimeout)
	code, body := get(t, rep.URL+"status")
	var st messages.AppStatus
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || st.ActiveConnections != 2 {
		t.Fatalf("session with open WebSockets: %d %s", code, body)
	}
	// Keep reading so the demo's pings are answered.
	go func() { _, _, _ = alice.Read(ctx) }()
	go func() { _, _, _ = bob.Read(ctx) }()
	alice.Close(websocket.StatusNormalClosure, "")
	bob.Close(websocket.StatusNormalClosure, "")
	eventually(t, 15*time.Second, "the session to be reaped after its sockets closed", func() bool {
		code, _ := get(t, h.BaseURL+"/sessions/"+rep.SessionID)
		return code == http.StatusNotFound
	})
}

func TestBadInputSpawnsNothing(t *testing.T) {
	h := start(t, testConfig(t))
	ev := h.watchEvents(t)
	cases := map[string]struct {
		body string
		want int
	}{
		"malformed":        {`{"key":`, 400},
		"trailing garbage": {`{} {}`, 400},
		"not an object":    {`[1,2]`, 400},
		"unknown field":    {`{"image":"evil"}`, 400},
		"negative timeout": {`{"idle_timeout_seconds":-5}`, 400},
		"absurd timeout":   {`{"max_lifetime_seconds":99999999999}`, 400},
		"bad env name":     {`{"env":{"1BAD":"x"}}`, 400},
		"env with =":       {`{"env":{"A=B":"x"}}`, 400},
		"reserved env":     {`{"env":{"PORT":"1"}}`, 400},
		"loader env":       {`{"env":{"LD_PRELOAD":"/tmp/x.so"}}`, 400},
		"field in caps":    {`{"Key":"k"}`, 400},
		"null body":        {`null`, 400},
		"duplicate field":  {`{"key":"a","key":"b"}`, 400},
		"bad label":        {`{"labels":{"bad key!":"x"}}`, 400},
		"too large":        {`{"key":"` + strings.Repeat("a", 1<<20) + `"}`, 413},
	}
	for name, c := range cases {
		var body map[string]map[string]string
		code := post(t, h.BaseURL+"/init", c.body, &body)
		if code != c.want || body["error"]["code"] == "" || body["error"]["message"] == "" {
			t.Errorf("%s: %d %v, want %d with a JSON error", name, code, body, c.want)
		}
	}
	time.Sleep(200 * time.Millisecond)
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.all) != 0 {
		t.Fatalf("bad requests caused events: %+v", ev.all)
	}
}

func TestShutdownStopsEverySession(t *testing.T) {
	h := start(t, testConfig(t))
	var ids []string
	for range 3 {
		var rep messages.SpawnReply
		if code := post(t, h.BaseURL+"/init", "", &rep); code != http.StatusCreated {
			t.Fatalf("POST /init: %d", code)
		}
		ids = append(ids, rep.SessionID)
	}
	if got := len(appProcesses(t, ids...)); got < 3 {
		t.Fatalf("%d app processes, want 3", got)
	}
	began := time.Now()
	h.Stop(t)
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("shutdown took %s", took)
	}
	if left := appProcesses(t, ids...); len(left) != 0 {
		t.Fatalf("processes outlived shutdown: %v", left)
	}
}

func TestUnknownSessionPaths(t *testing.T) {
	h := start(t, testConfig(t))
	for _, path := range []string{"/p/", "/p/nope/", "/p/" + messages.NewSessionID() + "/", "/p/%2e%2e/init", "/p//x"} {
		code, body := get(t, h.BaseURL+path)
		if code != http.StatusNotFound || !strings.Contains(body, `"error"`) {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	// Dot segments are cleaned by a redirect before any routing, so they
	// can never climb out of /p/<id>/ into another session.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(h.BaseURL + "/p/../sessions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/sessions" {
		t.Fatalf("GET /p/../sessions: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}
