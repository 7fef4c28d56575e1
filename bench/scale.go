package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/messages"
)

// statusServers starts benchupstream status processes for n sessions,
// at most perProcess each (a process holds a listener and a connection per
// session, under the file limit), from host number first.
func statusServers(ctx context.Context, env *Env, dir string, n, first int, idleAt time.Time) ([]*Child, []string, error) {
	const perProcess = 5000
	var children []*Child
	var addrs []string
	for off := 0; off < n; off += perProcess {
		count := min(perProcess, n-off)
		args := []string{"status", strconv.Itoa(count), strconv.Itoa(first + off)}
		if !idleAt.IsZero() {
			args = append(args, strconv.FormatFloat(float64(idleAt.UnixNano())/1e9, 'f', 3, 64))
		}
		c, a, err := StartHelper(ctx, filepath.Join(dir, fmt.Sprintf("status-%d.log", first+off)), env.UpstreamBin, args...)
		if err != nil {
			stopAll(children)
			return nil, nil, err
		}
		children = append(children, c)
		if len(a) != count {
			stopAll(children)
			return nil, nil, fmt.Errorf("status server printed %d addresses, want %d", len(a), count)
		}
		addrs = append(addrs, a...)
	}
	return children, addrs, nil
}

func stopAll(cs []*Child) {
	for _, c := range cs {
		c.Stop(5 * time.Second)
	}
}

func cpuOf(cs []*Child) time.Duration {
	var t time.Duration
	for _, c := range cs {
		if d, err := CPUTime(c.Pid()); err == nil {
			t += d
		}
	}
	return t
}

// Scale registers 10,000 live sessions served by cheap /status servers
// and measures the control plane's CPU, heartbeat rate and memory, then
// lets 1,000 more go idle at once and times their reaping.
func Scale(ctx context.Context, env *Env) ([]Section, error) {
	probe := Section{Title: "Prober and reaper at 10,000 sessions",
		PeerName: "what the row names: the /status servers' own CPU, the configured probe rate, the probe interval"}
	mem := Section{Title: "Memory", PeerName: "the same control plane with no sessions"}
	dir := env.Scratch("scale")
	const interval = 5 * time.Second
	cp, err := StartControlPlane(ctx, env.SpawnerBin, dir, "SPAWNER_PROBE_INTERVAL="+interval.String())
	if err != nil {
		return nil, err
	}
	defer cp.Stop()
	time.Sleep(2 * time.Second) // let start-up settle before the baseline
	idleRSS, err := RSS(cp.Pid())
	if err != nil {
		return nil, err
	}

	live := pick(env, 10_000, 2_000)
	busy, addrs, err := statusServers(ctx, env, dir, live, 0, time.Time{})
	if err != nil {
		return nil, err
	}
	defer stopAll(busy)
	sessions := make([]messages.Session, len(addrs))
	for i, a := range addrs {
		sessions[i] = FakeSession(a, "http://"+a+"/status", 3600)
	}
	var beats atomic.Int64
	sub, err := cp.NC.Subscribe(cp.Subj.Heartbeats(), func(*nats.Msg) { beats.Add(1) })
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	regStart := time.Now()
	if err := cp.Register(ctx, sessions); err != nil {
		return nil, fmt.Errorf("register %d sessions: %w", live, err)
	}
	env.Log.Info("registered", "sessions", live, "took", time.Since(regStart).Round(time.Millisecond))
	// Two intervals for every target to be probed and its connection kept.
	time.Sleep(2*interval + time.Second)

	window := pick(env, 4*interval, 2*interval)
	cpu0, beats0, status0, t0 := mustCPU(cp.Pid()), beats.Load(), cpuOf(busy), time.Now()
	time.Sleep(window)
	cpu1, beats1, status1, t1 := mustCPU(cp.Pid()), beats.Load(), cpuOf(busy), time.Now()
	el := t1.Sub(t0).Seconds()
	cores := (cpu1 - cpu0).Seconds() / el
	statusCores := (status1 - status0).Seconds() / el
	rate := float64(beats1-beats0) / el
	want := float64(live) / interval.Seconds()
	liveRSS, _ := RSS(cp.Pid())
	probe.Rows = append(probe.Rows,
		Row{Metric: fmt.Sprintf("control plane CPU, %d live sessions, %s probes (whole all-in-one process; peer: the /status servers answering)", live, interval),
			Spawner: fmt.Sprintf("%.3f cores", cores), Peer: fmt.Sprintf("%.3f cores", statusCores), Ratio: Ratio(cores, statusCores),
			Goal: "< 0.5 core", Met: Met(cores < 0.5)},
		Row{Metric: "heartbeats/s (peer: sessions ÷ interval)", Spawner: fmt.Sprintf("%.0f", rate), Peer: fmt.Sprintf("%.0f", want),
			Ratio: Ratio(rate, want), Goal: "every session every interval (≥ 0.95×)", Met: Met(rate >= 0.95*want)},
	)
	mem.Rows = append(mem.Rows, Row{Metric: fmt.Sprintf("RSS of the all-in-one control plane, %d live sessions", live),
		Spawner: fmt.Sprintf("%.0f MB", float64(liveRSS)/1e6), Peer: fmt.Sprintf("%.0f MB", float64(idleRSS)/1e6),
		Ratio: Ratio(float64(liveRSS), float64(idleRSS)), Goal: "< 200 MB", Met: Met(liveRSS < 200e6)})
	env.Log.Info("scale", "cores", cores, "heartbeats_per_s", rate, "rss_mb", liveRSS/1e6)

	reap, err := reapAccuracy(ctx, env, cp, dir, live, interval)
	if err != nil {
		probe.Notes = append(probe.Notes, "reap accuracy FAILED: "+err.Error())
		return []Section{probe, mem}, nil
	}
	probe.Rows = append(probe.Rows, reap...)
	probe.Notes = append(probe.Notes,
		fmt.Sprintf("Sessions are registry records marked ready whose /status is served by benchupstream, one loopback address per session (127.77.x.y), so that the prober keeps one connection per session as it would with real apps. CPU is read from /proc over a %s window after two quiet intervals.", window),
		"Reap latency is measured from the moment the sessions' /status crosses the idle timeout to the terminated event on NATS.")
	return []Section{probe, mem}, nil
}

func mustCPU(pid int) time.Duration {
	d, _ := CPUTime(pid)
	return d
}

// reapAccuracy lets 1,000 sessions go idle at one instant and times each
// terminated event from the moment its idle timeout was crossed.
func reapAccuracy(ctx context.Context, env *Env, cp *ControlPlane, dir string, first int, interval time.Duration) ([]Row, error) {
	n := pick(env, 1000, 200)
	const idleTimeout = 5 * time.Second
	// Registration and a first probe of every session must come before
	// the sessions start counting idle time.
	idleAt := time.Now().Add(2*interval + 2*time.Second)
	crossed := idleAt.Add(idleTimeout)
	servers, addrs, err := statusServers(ctx, env, dir, n, first, idleAt)
	if err != nil {
		return nil, err
	}
	defer stopAll(servers)
	sessions := make([]messages.Session, len(addrs))
	want := make(map[string]bool, n)
	for i, a := range addrs {
		sessions[i] = FakeSession(a, "http://"+a+"/status", int64(idleTimeout/time.Second))
		want[sessions[i].ID] = true
	}
	var mu sync.Mutex
	var lat Durations
	var early int
	all := make(chan struct{})
	sub, err := cp.NC.Subscribe(cp.Subj.Event(messages.EventTerminated), func(m *nats.Msg) {
		at := time.Now()
		var ev messages.Event
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !want[ev.SessionID] {
			return
		}
		delete(want, ev.SessionID)
		if at.Before(crossed) {
			early++
		}
		lat = append(lat, at.Sub(crossed))
		if len(want) == 0 {
			close(all)
		}
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := cp.Register(ctx, sessions); err != nil {
		return nil, err
	}
	if time.Now().After(idleAt) {
		return nil, fmt.Errorf("registering %d sessions took past the idle start", n)
	}
	select {
	case <-all:
	case <-time.After(time.Until(crossed) + 6*interval):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	missing := len(want)
	if early > 0 || missing > 0 {
		env.Log.Warn("reap accuracy", "early", early, "missing", missing)
	}
	goal := interval + time.Second
	p50, p99 := lat.Percentile(50), lat.Percentile(99)
	if missing > 0 {
		p99 = 0
	}
	rows := []Row{
		{Metric: fmt.Sprintf("reap latency p50, %d sessions idle at once (over %d live)", n, first), Spawner: Ms(p50),
			Peer: Ms(interval) + " interval", Ratio: Ratio(float64(p50), float64(interval)), Met: "—"},
		{Metric: "reap latency p99", Spawner: Ms(p99), Peer: Ms(interval) + " interval", Ratio: Ratio(float64(p99), float64(interval)),
			Goal: "≤ interval + 1 s", Met: Met(missing == 0 && early == 0 && p99 <= goal)},
	}
	if missing > 0 {
		rows[1].Spawner = fmt.Sprintf("%d of %d never reaped", missing, n)
	}
	return rows, nil
}
