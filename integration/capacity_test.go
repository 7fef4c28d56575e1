package integration

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

// SPAWNER_MAX_SESSIONS=3 against 60 concurrent /init: exactly three
// sessions go live and the rest get 429, as the attack on the all-in-one
// tried it; deleting one lets exactly one more in.
func TestMaxSessionsHoldsUnderConcurrentInit(t *testing.T) {
	cfg := testConfig(t)
	cfg.Provisioner.MaxSessions = 3
	h := start(t, cfg)
	var mu sync.Mutex
	codes := map[int]int{}
	var live []string
	var wg sync.WaitGroup
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rep messages.SpawnReply
			code := post(t, h.BaseURL+"/init", "", &rep)
			mu.Lock()
			defer mu.Unlock()
			codes[code]++
			if code == http.StatusCreated {
				live = append(live, rep.SessionID)
			}
		}()
	}
	wg.Wait()
	if codes[http.StatusCreated] != 3 || codes[http.StatusTooManyRequests] != 57 {
		t.Fatalf("answers to 60 concurrent /init with a limit of 3: %v", codes)
	}
	var list struct {
		Count int `json:"count"`
	}
	code, body := get(t, h.BaseURL+"/sessions")
	if err := json.Unmarshal([]byte(body), &list); code != http.StatusOK || err != nil || list.Count != 3 {
		t.Fatalf("GET /sessions: %d %s, want 3 sessions", code, body)
	}
	req, _ := http.NewRequest(http.MethodDelete, h.BaseURL+"/sessions/"+live[0], nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code := post(t, h.BaseURL+"/init", "", nil); code != http.StatusCreated {
		t.Fatalf("/init after a delete: %d", code)
	}
	if code := post(t, h.BaseURL+"/init", "", nil); code != http.StatusTooManyRequests {
		t.Fatalf("/init past the limit again: %d", code)
	}
}
