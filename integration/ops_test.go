package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/client"
	"github.com/spawnerhq/spawner/messages"
)

// opsScrape reads a /metrics page into sample name (with labels) → value.
func opsScrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// opsNext reads one event, failing the test rather than hanging it.
func opsNext(t *testing.T, s *client.EventStream, within time.Duration) (messages.Event, error) {
	t.Helper()
	type result struct {
		ev  messages.Event
		err error
	}
	ch := make(chan result, 1)
	go func() {
		ev, err := s.Next()
		ch <- result{ev, err}
	}()
	select {
	case r := <-ch:
		return r.ev, r.err
	case <-time.After(within):
		t.Fatalf("no event within %s", within)
		return messages.Event{}, nil
	}
}

// opsSessionEvents reads one session's events from a stream of all events
// until its terminated or failed event.
func opsSessionEvents(t *testing.T, s *client.EventStream, id string, within time.Duration) []messages.Event {
	t.Helper()
	deadline := time.Now().Add(within)
	var out []messages.Event
	for {
		ev, err := opsNext(t, s, time.Until(deadline))
		if err != nil {
			t.Fatalf("event stream: %v (so far %+v)", err, out)
		}
		if ev.SessionID != id {
			continue
		}
		out = append(out, ev)
		if ev.Type == messages.EventTerminated || ev.Type == messages.EventFailed {
			return out
		}
	}
}

func opsTypes(evs []messages.Event) string {
	var names []string
	for _, e := range evs {
		names = append(names, string(e.Type))
	}
	return strings.Join(names, ",")
}

// An idle session, seen the way an operator sees it: the event stream shows
// it become ready and then end as idle, and the metrics count both.
func TestOpsIdleSessionInEventsAndMetrics(t *testing.T) {
	cfg := testConfig(t)
	cfg.Provisioner.IdleTimeout = 2 * time.Second
	h := start(t, cfg)
	api, err := client.New(h.BaseURL)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := api.Events(t.Context(), client.EventsOptions{NoReplay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()

	rep, err := api.Init(t.Context(), messages.SpawnRequest{Key: "ops-idle"})
	if err != nil {
		t.Fatal(err)
	}
	if list, err := api.List(t.Context()); err != nil || len(list) != 1 || list[0].ID != rep.SessionID {
		t.Fatalf("List after Init = %+v, %v", list, err)
	}
	evs := opsSessionEvents(t, stream, rep.SessionID, 30*time.Second)
	if got := opsTypes(evs); got != "creating,ready,stopping,terminated" {
		t.Fatalf("events of an idle session: %s, want creating,ready,stopping,terminated", got)
	}
	if end := evs[3]; end.Reason != messages.ReasonIdle || end.LifetimeSeconds < 2 {
		t.Errorf("terminated = %+v, want reason idle after at least the 2s timeout", end)
	}
	if evs[1].SpawnSeconds <= 0 || evs[1].URL != rep.URL {
		t.Errorf("ready = %+v, want the spawn time and the URL", evs[1])
	}

	// The session's own stream replays the whole story and then ends.
	one, err := api.Events(t.Context(), client.EventsOptions{SessionID: rep.SessionID})
	if err != nil {
		t.Fatal(err)
	}
	var replay []messages.Event
	for {
		ev, err := opsNext(t, one, 10*time.Second)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		replay = append(replay, ev)
	}
	one.Close()
	if got := opsTypes(replay); got != "creating,ready,stopping,terminated" {
		t.Errorf("/sessions/{id}/events replayed %s", got)
	}

	var m map[string]float64
	eventually(t, 10*time.Second, "the session gauge to drop to zero", func() bool {
		m = opsScrape(t, h.BaseURL+"/metrics")
		return m[`spawner_sessions{app="default",status="ready"}`] == 0 && m[`spawner_reaps_total{reason="idle"}`] == 1
	})
	for sample, want := range map[string]float64{
		`spawner_spawn_duration_seconds_count{outcome="ready"}`:          1,
		`spawner_reaps_total{reason="idle"}`:                             1,
		`spawner_sessions_terminated_total{app="default",reason="idle"}`: 1,
		`spawner_spawns_in_flight`:                                       0,
		`spawner_spawn_queue_depth`:                                      0,
	} {
		if got := m[sample]; got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
	if m["spawner_probe_duration_seconds_count"] < 1 {
		t.Error("no probe was measured")
	}
}

// A session that cannot start: the API says so, its events carry the
// error, and the failure is counted by reason.
func TestOpsFailedSpawnIsExplained(t *testing.T) {
	cfg := testConfig(t)
	cfg.Process.Command = "echo 'config file missing' >&2; exit 3"
	h := start(t, cfg)
	api, _ := client.New(h.BaseURL)
	stream, err := api.Events(t.Context(), client.EventsOptions{NoReplay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	_, err = api.Init(t.Context(), messages.SpawnRequest{})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway || apiErr.Code != messages.CodeSpawnFailed {
		t.Fatalf("Init of an app that exits: %v, want 502 spawn_failed", err)
	}
	created, err := opsNext(t, stream, 10*time.Second)
	if err != nil || created.Type != messages.EventCreating {
		t.Fatalf("first event %+v (%v), want creating", created, err)
	}
	evs := opsSessionEvents(t, stream, created.SessionID, 10*time.Second)
	failed := evs[len(evs)-1]
	if failed.Type != messages.EventFailed || failed.Reason != messages.ReasonFailed || !strings.Contains(failed.Error, "exited") {
		t.Fatalf("last event %+v, want failed with the reason", failed)
	}
	one, err := api.Events(t.Context(), client.EventsOptions{SessionID: created.SessionID})
	if err != nil {
		t.Fatalf("events of the failed session: %v", err)
	}
	defer one.Close()
	var got []messages.Event
	for {
		ev, err := opsNext(t, one, 10*time.Second)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	if opsTypes(got) != "creating,failed" || got[1].Error != failed.Error {
		t.Errorf("/sessions/%s/events = %+v, want creating then failed with its error", created.SessionID, got)
	}
	m := opsScrape(t, h.BaseURL+"/metrics")
	if m[`spawner_spawn_failures_total{reason="backend"}`] != 1 || m[`spawner_spawn_duration_seconds_count{outcome="failed"}`] != 1 {
		t.Errorf("failures by reason: backend=%v, failed spawns timed=%v; want 1 and 1",
			m[`spawner_spawn_failures_total{reason="backend"}`], m[`spawner_spawn_duration_seconds_count{outcome="failed"}`])
	}
}

// The operator's tools against the all-in-one: the OpenAPI document, the
// CLI binary, a spawn over NATS and the separate metrics listener.
func TestOpsToolsAgainstTheAllInOne(t *testing.T) {
	cfg := testConfig(t)
	cfg.Common.MetricsAddr = "127.0.0.1:0"
	h := start(t, cfg)

	status, body := get(t, h.BaseURL+"/openapi.json")
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if status != http.StatusOK || json.Unmarshal([]byte(body), &doc) != nil || doc.Paths["/init"]["post"] == nil {
		t.Fatalf("/openapi.json: %d, does not describe POST /init", status)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rep, err := client.SpawnNATS(ctx, h.NC, cfg.Bus.Prefix, messages.SpawnRequest{Key: "over-nats"})
	if err != nil || !rep.Created || rep.Status != messages.StatusReady {
		t.Fatalf("SpawnNATS = %+v, %v", rep, err)
	}
	if status, _ := get(t, rep.URL); status != http.StatusOK {
		t.Errorf("the session's URL answered %d", status)
	}

	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, spawnerBin, args...)
		cmd.Env = append(os.Environ(), "SPAWNER_API_URL="+h.BaseURL)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("spawner %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := cli("sessions", "ls")
	if !strings.Contains(out, rep.SessionID) || !strings.Contains(out, "over-nats") || !strings.Contains(out, "ready") {
		t.Errorf("spawner sessions ls does not list the live session:\n%s", out)
	}
	if out := cli("events", "--no-follow", "-o", "json"); !strings.Contains(out, `"type":"ready"`) || !strings.Contains(out, rep.SessionID) {
		t.Errorf("spawner events --no-follow -o json:\n%s", out)
	}
	if out := cli("sessions", "rm", rep.SessionID); !strings.Contains(out, "ended "+rep.SessionID) {
		t.Errorf("spawner sessions rm: %s", out)
	}

	addr := h.Main.MetricsAddr()
	if addr == "" {
		t.Fatal("SPAWNER_METRICS_ADDR set, but no metrics listener")
	}
	m := opsScrape(t, "http://"+addr+"/metrics")
	if m[`spawner_spawn_duration_seconds_count{outcome="ready"}`] != 1 || m[`spawner_proxy_requests_total{code="2xx"}`] < 1 {
		t.Errorf("the metrics listener shows %v spawns and %v proxied 2xx, want 1 and at least 1",
			m[`spawner_spawn_duration_seconds_count{outcome="ready"}`], m[`spawner_proxy_requests_total{code="2xx"}`])
	}
}
