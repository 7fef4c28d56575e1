package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/messages"
)

// The fault run's shape. Kills are spaced so that the churn recovers in
// between. The first round is short outages; the second keeps NATS down
// longer than JetStream's 5s API timeout, so a registry call caught by it
// fails instead of waiting, and keeps the provisioner and gateway down for seconds. The
// last kill is well before the churn ends, so that every recovery path
// (reconcile, abandoned spawns, redelivered heartbeats) has run by the
// time the invariant is checked.
const (
	faultWorkers       = 8
	faultPause         = 700 * time.Millisecond
	faultMinChurn      = 100 * time.Second
	faultMaxChurn      = 160 * time.Second
	faultMinAccepted   = 200
	faultSettleTimeout = 45 * time.Second
)

var faultKills = []struct {
	at       time.Duration
	name     string
	downtime time.Duration
}{
	{8 * time.Second, "provisioner", time.Second},
	{20 * time.Second, "nats", time.Second},
	{32 * time.Second, "gateway", time.Second},
	{40 * time.Second, "prober", time.Second},
	{48 * time.Second, "reaper", time.Second},
	{58 * time.Second, "nats", 7 * time.Second},
	{75 * time.Second, "provisioner", 3 * time.Second},
	{86 * time.Second, "gateway", 3 * time.Second},
}

// TestFaultInjection runs each component as its own process, keeps a churn
// of sessions going, SIGKILLs every component and the NATS server in turn
// and restarts them, then checks what users and operators rely on: every
// session a client was handed is still served or ended with an event, no
// app outlives its session, and no request hangs.
func TestFaultInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault-injection run takes about two minutes")
	}
	c := newFaultCluster(t)
	for _, name := range []string{"nats", "provisioner", "prober", "reaper", "gateway"} {
		if err := c.Start(name); err != nil {
			t.Fatal(err)
		}
	}
	events := faultWatchEvents(t, c.NATSURL, c.NATSOptions(bus.RoleClient)...)
	loadNC, err := faultDial(c.NATSURL, "fault-load", c.NATSOptions(bus.RoleClient)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(loadNC.Close)
	load := newFaultChurn(c.GatewayURLs, loadNC)

	ctx, stopLoad := context.WithCancel(context.Background())
	var workers sync.WaitGroup
	for range faultWorkers {
		workers.Go(func() { load.run(ctx, faultPause) })
	}
	// Registered after the cluster, so it runs first: the load stops
	// before the processes it talks to are killed.
	t.Cleanup(func() { stopLoad(); workers.Wait() })

	start := load.start
	var timeline []string
	for _, k := range faultKills {
		time.Sleep(time.Until(start.Add(k.at)))
		if err := c.Kill(k.name); err != nil {
			t.Fatal(err)
		}
		time.Sleep(k.downtime)
		if err := c.Start(k.name); err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("%5.1fs: killed %s, restarted it after %s (%d sessions accepted so far)",
			time.Since(start).Seconds(), k.name, k.downtime, len(load.accepted()))
		timeline = append(timeline, line)
		t.Log(line)
	}
	for time.Since(start) < faultMaxChurn && (time.Since(start) < faultMinChurn || len(load.accepted()) < faultMinAccepted) {
		time.Sleep(200 * time.Millisecond)
	}
	stopLoad()
	workers.Wait()
	report := faultReport{Test: t.Name(), Time: time.Now().UTC(), ChurnSeconds: time.Since(start).Seconds(),
		Kills: c.Kills(), KillTimeline: timeline}
	load.fill(&report)

	settleStart := time.Now()
	var v faultVerdict
	for {
		v = faultCheck(c, load.accepted(), events)
		if v.settled() || time.Since(settleStart) > faultSettleTimeout {
			break
		}
		time.Sleep(time.Second)
	}
	report.SettleSeconds = time.Since(settleStart).Seconds()
	report.SessionsLost, report.LeakedProcesses = len(v.lost), len(v.leaked)
	report.EndedBy, report.LiveAtEnd = v.endedBy, v.live
	report.EventsLive, report.EventsReplayed = events.counts()

	// Stop the way an orchestrator does; the process backend's sessions
	// cannot outlive their provisioner, so none may be left.
	for _, name := range []string{"gateway", "prober", "reaper", "provisioner"} {
		if err := c.Stop(name, 30*time.Second); err != nil {
			t.Error(err)
		}
	}
	report.AppsAfterStop = len(faultAwaitNoApps(c.Tag, 10*time.Second))
	if err := c.Stop("nats", 15*time.Second); err != nil {
		t.Error(err)
	}
	writeFaultReport(t, report)
	if err := events.dump(filepath.Join(c.logDir, "events.jsonl")); err != nil {
		t.Error(err)
	}
	t.Logf("component logs and events are in %s", c.logDir)

	if v.err != nil {
		t.Errorf("checking the invariant: %v", v.err)
	}
	if report.SessionsAccepted < faultMinAccepted {
		t.Errorf("only %d sessions were accepted, want at least %d", report.SessionsAccepted, faultMinAccepted)
	}
	if report.WebSocketOK < report.SessionsAccepted/2 {
		t.Errorf("only %d of %d sessions carried a WebSocket message", report.WebSocketOK, report.SessionsAccepted)
	}
	for _, s := range v.lost {
		t.Errorf("lost session: accepted, not routable, and no terminated or failed event: %s", s)
	}
	for _, p := range v.leaked {
		t.Errorf("leaked app process: %s", p)
	}
	if len(v.records) > 0 {
		t.Errorf("%d records left %s after the churn stopped; every idle session should have been reaped: %v",
			len(v.records), faultSettleTimeout, v.records)
	}
	if report.HTTPTimeouts > 0 || report.WebSocketTimeouts > 0 {
		t.Errorf("%d HTTP requests and %d WebSocket exchanges hung past their timeout", report.HTTPTimeouts, report.WebSocketTimeouts)
	}
	if report.AppsAfterStop > 0 {
		t.Errorf("%d app processes outlived a clean stop", report.AppsAfterStop)
	}
}

// TestAllInOneKill9Restart is the done-when: the all-in-one binary
// is SIGKILLed with three live sessions and started again on the same data
// dir. Within 30s every old session is served again or ended with an
// event, none of its apps is left, and its key is free for a new session.
func TestAllInOneKill9Restart(t *testing.T) {
	c := newFaultCluster(t, "SPAWNER_IDLE_TIMEOUT=10m")
	if err := c.Start("all"); err != nil {
		t.Fatal(err)
	}
	events := faultWatchEvents(t, c.NATSURL, c.NATSOptions(bus.RoleClient)...)
	client := &http.Client{Timeout: faultInitTimeout}
	var old []faultSession
	for _, body := range []string{``, `{"key":"restart-doc"}`, `{"labels":{"suite":"restart"}}`} {
		resp, err := client.Post(c.BaseURL+"/init", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var rep messages.SpawnReply
		err = json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST /init %s: %d %+v %v", body, resp.StatusCode, rep, err)
		}
		if !faultRoutable(rep.URL) {
			t.Fatalf("session %s is not routable before the kill", rep.SessionID)
		}
		old = append(old, faultSession{ID: rep.SessionID, URL: rep.URL, Via: body})
	}
	oldApps := faultApps(c.Tag)
	for _, s := range old {
		if !faultHasApp(oldApps, s.ID) {
			t.Fatalf("session %s has no app process before the kill", s.ID)
		}
	}

	if err := c.Kill("all"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := c.Start("all"); err != nil {
		t.Fatal(err)
	}
	var pending []string
	for {
		pending = pending[:0]
		if err := events.replay(context.Background()); err != nil {
			pending = append(pending, "event stream: "+err.Error())
		}
		for _, s := range old {
			if _, ended := events.ended(s.ID); !ended && !faultRoutable(s.URL) {
				pending = append(pending, s.ID+" is neither routable nor ended")
			}
		}
		apps := faultApps(c.Tag)
		for pid, id := range oldApps {
			if apps[pid] == id {
				pending = append(pending, fmt.Sprintf("app pid %d of session %s from the old run still runs", pid, id))
			}
		}
		if len(pending) == 0 || time.Since(killed) > 30*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(pending) > 0 {
		t.Fatalf("30s after the kill: %v", pending)
	}
	for _, s := range old {
		if e, ok := events.ended(s.ID); ok {
			t.Logf("session %s: %s (%s) %.1fs after the kill", s.ID, e.Type, e.Reason, e.Time.Sub(killed).Seconds())
		} else {
			t.Logf("session %s: routable again", s.ID)
		}
	}

	// The restarted Spawner serves, and the key of the ended session is free.
	resp, err := client.Post(c.BaseURL+"/init", "application/json", strings.NewReader(`{"key":"restart-doc"}`))
	if err != nil {
		t.Fatal(err)
	}
	var rep messages.SpawnReply
	_ = json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if _, ended := events.ended(old[1].ID); ended && (resp.StatusCode != http.StatusCreated || rep.SessionID == old[1].ID) {
		t.Errorf("after the restart the freed key answered %d %+v, want a new session", resp.StatusCode, rep)
	}
	if !faultRoutable(rep.URL) {
		t.Errorf("new session %s is not routable", rep.SessionID)
	}
	if err := c.Stop("all", 30*time.Second); err != nil {
		t.Error(err)
	}
	if left := faultAwaitNoApps(c.Tag, 10*time.Second); len(left) > 0 {
		t.Errorf("app processes outlived a clean stop: %v", left)
	}
}

func faultHasApp(apps map[int]string, id string) bool {
	for _, got := range apps {
		if got == id {
			return true
		}
	}
	return false
}
