package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// faultVerdict is one check of the invariant.
type faultVerdict struct {
	lost    []string
	leaked  []string
	records []string
	live    int
	endedBy map[string]int
	err     error
}

// settled reports that the invariant holds and the churn's sessions have
// all been reaped, so there is nothing left to wait for.
func (v faultVerdict) settled() bool {
	return v.err == nil && len(v.lost) == 0 && len(v.leaked) == 0 && len(v.records) == 0
}

// faultCheck checks every accepted session and every app process of
// the run against the events, the proxy and the registry.
func faultCheck(c *faultCluster, sessions []faultSession, events *faultEvents) faultVerdict {
	v := faultVerdict{endedBy: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.replay(ctx); err != nil {
		v.err = err
		return v
	}
	// Apps are listed before records: an app's record is written before
	// the app starts, so a live app found here has its record in the list.
	apps := faultApps(c.Tag)
	records, err := faultRecords(c.BaseURL)
	if err != nil {
		v.err = err
		return v
	}
	for _, s := range sessions {
		if e, ok := events.ended(s.ID); ok {
			v.endedBy[string(e.Type)+":"+string(e.Reason)]++
			continue
		}
		if faultRoutable(s.URL) {
			v.live++
			continue
		}
		v.lost = append(v.lost, fmt.Sprintf("%s via %s (record: %s)", s.ID, s.Via, faultOrNone(records[s.ID])))
	}
	for pid, id := range apps {
		if st := records[id]; st == messages.StatusCreating || st == messages.StatusReady {
			continue
		}
		v.leaked = append(v.leaked, fmt.Sprintf("pid %d of session %s (record: %s)", pid, id, faultOrNone(records[id])))
	}
	for id, st := range records {
		v.records = append(v.records, id+":"+string(st))
	}
	sort.Strings(v.lost)
	sort.Strings(v.leaked)
	sort.Strings(v.records)
	return v
}

func faultOrNone(st messages.Status) string {
	if st == "" {
		return "none"
	}
	return string(st)
}

// faultRecords returns the status of every record, from GET /sessions.
func faultRecords(base string) (map[string]messages.Status, error) {
	client := &http.Client{Timeout: faultGetTimeout}
	resp, err := client.Get(base + "/sessions")
	if err != nil {
		return nil, fmt.Errorf("GET /sessions: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /sessions: %s", resp.Status)
	}
	var body struct {
		Sessions []messages.Session `json:"sessions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("GET /sessions: %w", err)
	}
	out := make(map[string]messages.Status, len(body.Sessions))
	for _, s := range body.Sessions {
		out[s.ID] = s.Status
	}
	return out, nil
}

// routable reports whether the session's app answers through the proxy.
func faultRoutable(sessionURL string) bool {
	client := &http.Client{Timeout: faultGetTimeout}
	resp, err := client.Get(sessionURL + "status")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// faultAwaitNoApps waits until no app of the run is left and returns what is.
func faultAwaitNoApps(tag string, timeout time.Duration) map[int]string {
	deadline := time.Now().Add(timeout)
	for {
		apps := faultApps(tag)
		if len(apps) == 0 || time.Now().After(deadline) {
			return apps
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// faultAppWatch scans the run's app processes every interval and keeps,
// per session, the last time one was seen running.
type faultAppWatch struct {
	mu       sync.Mutex
	lastSeen map[string]time.Time
	pids     map[string]int
}

// watchFaultApps scans until ctx ends.
func watchFaultApps(ctx context.Context, tag string, every time.Duration) *faultAppWatch {
	w := &faultAppWatch{lastSeen: map[string]time.Time{}, pids: map[string]int{}}
	go func() {
		for ctx.Err() == nil {
			apps := faultApps(tag)
			now := time.Now()
			w.mu.Lock()
			for pid, id := range apps {
				w.lastSeen[id], w.pids[id] = now, pid
			}
			w.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
		}
	}()
	return w
}

// outlived lists the apps seen running more than slack after the event
// that ended their session: a terminated or failed event is sent after
// the instance has stopped.
func (w *faultAppWatch) outlived(events *faultEvents, slack time.Duration) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for id, seen := range w.lastSeen {
		if e, ok := events.ended(id); ok && seen.Sub(e.Time) > slack {
			out = append(out, fmt.Sprintf("pid %d of session %s ran %.1fs after its %s (%s) event",
				w.pids[id], id, seen.Sub(e.Time).Seconds(), e.Type, e.Reason))
		}
	}
	sort.Strings(out)
	return out
}

// writeFaultReport logs the report and writes it to
// artifacts/fault-report.json, or for a test other than
// TestFaultInjection to a file named after it.
func writeFaultReport(t *testing.T, r faultReport) {
	t.Helper()
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fault report:\n%s", data)
	path := filepath.Join("artifacts", "fault-report.json")
	if t.Name() != "TestFaultInjection" {
		path = filepath.Join("artifacts", "fault-report-"+t.Name()+".json")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// faultApps maps the pid of every app process started under tag to its
// session id, read from the environment the process backend gave it.
func faultApps(tag string) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue // gone, or a zombie whose environment is released
		}
		var id string
		tagged := false
		for _, kv := range strings.Split(string(env), "\x00") {
			if v, ok := strings.CutPrefix(kv, "SPAWNER_SESSION_ID="); ok {
				id = v
			}
			if kv == faultTagVar+"="+tag {
				tagged = true
			}
		}
		if tagged && id != "" {
			out[pid] = id
		}
	}
	return out
}
