package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/process"
)

// readyAfterEnv tells benchupstream's late app, through the process
// backend's Spec.Env, how long to wait before it listens.
const readyAfterEnv = "BENCH_READY_AFTER"

// readyApps are the spawn benchmark's test apps, by the time they take to
// listen, with how many spawns of each a full and a quick run time.
var readyApps = []struct {
	delay       time.Duration
	full, quick int
}{
	{20 * time.Millisecond, 100, 8},
	{200 * time.Millisecond, 60, 8},
	{2 * time.Second, 25, 5},
}

// SpawnLatency times the process backend's Start, the code that ships,
// for apps that become ready after about 20 ms, 200 ms and 2 s; each
// spawn is followed by the same app started directly and polled by the
// benchmark's own loop, so both see the same machine.
func SpawnLatency(ctx context.Context, env *Env) (Section, error) {
	sec := Section{Title: "Spawn readiness, process backend",
		PeerName: "the same app started directly (exec with PORT and HOST) and its /status polled every 1 ms by a loop written for the benchmark"}
	b, stop, err := startBackend(ctx, env, process.IsolationAuto)
	if err != nil {
		return sec, err
	}
	defer stop()
	for _, app := range readyApps {
		n := pick(env, app.full, app.quick)
		s, err := sampleStarts(ctx, b, env.UpstreamBin, app.delay, n)
		if err != nil {
			return sec, err
		}
		sec.Rows = append(sec.Rows, s.rows(fmt.Sprintf("app ready after %s", app.delay), true)...)
		if app.delay >= time.Second {
			cs, cd := s.spawnerCPU.Mean(), s.directCPU.Mean()
			sec.Rows = append(sec.Rows, Row{
				Metric:  fmt.Sprintf("CPU per spawn while waiting, app ready after %s (mean)", app.delay),
				Spawner: Ms(cs), Peer: Ms(cd), Ratio: Ratio(float64(cs), float64(cd)),
				Goal: "≤ a tenth of a core over the wait", Met: Met(cs <= app.delay/10)})
		}
	}
	// The same first app without isolation, which always goes through
	// the shell, shows what the isolated path's direct start saves.
	if b.Isolation() != process.IsolationNone {
		plain, stopPlain, err := startBackend(ctx, env, process.IsolationNone)
		if err != nil {
			return sec, err
		}
		defer stopPlain()
		app := readyApps[0]
		s, err := sampleStarts(ctx, plain, env.UpstreamBin, app.delay, pick(env, app.full, app.quick))
		if err != nil {
			return sec, err
		}
		sec.Rows = append(sec.Rows, s.rows(fmt.Sprintf("app ready after %s, isolation none", app.delay), false)...)
	}
	sec.Notes = append(sec.Notes,
		fmt.Sprintf("Spawner's figure is the process backend's Start as the provisioner calls it (isolation %q, status source app), "+
			"with its shared readiness wait (provisioner.AwaitReady); the app is benchupstream late, which listens only after the delay. "+
			"The isolation-none rows, without a goal, are the same app without isolation, which always starts it through /bin/sh.", b.Isolation()),
		fmt.Sprintf("Each app's first %d spawns are a warm-up and not counted. Apps are stopped between spawns, outside the timed calls, and each timed start comes %s after the last one ended, so neither contender pays for the other's leftovers.", startWarmup, startSettle),
		"Isolated starts take a spare helper already waiting in its namespaces (provisioner/process/spare.go); the backend starts the next one once the session is ready, outside the timed call. "+
			"The helper starts the app from a vfork, and a command the shell would only split and expand, as this one, without the shell (provisioner/process/argv.go).",
		"CPU is getrusage(RUSAGE_SELF) of the benchmark process around each timed call: the backend's (or the peer's) own work "+
			"while it starts and waits, not the app's.")
	return sec, nil
}

// startBackend runs a process backend for the late app with isolation;
// stop ends it and whatever it still runs.
func startBackend(ctx context.Context, env *Env, isolation string) (*process.Backend, func(), error) {
	logf, err := os.Create(filepath.Join(env.Scratch("spawn-latency"), "backend-"+isolation+".log"))
	if err != nil {
		return nil, nil, err
	}
	// The shipped defaults, with the two this benchmark pins: a short grace
	// for the stops between spawns, and the isolation under test.
	cfg := settings.Overlay(process.Config{StatusSource: "app", StopGrace: time.Second, Isolation: isolation})
	command := "exec " + env.UpstreamBin + " late $" + readyAfterEnv
	b, err := process.New(cfg, command, nil, slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	exits := make(chan provisioner.Exit, 16)
	ran := make(chan error, 1)
	go func() { ran <- b.Run(runCtx, exits) }()
	go func() {
		for range exits { // apps end only when stopped here; nothing to answer
		}
	}()
	return b, func() { cancel(); <-ran; logf.Close() }, nil
}

// startSettle comes before each timed start, so that neither contender
// pays for what the other left running: after a spawn the backend starts
// its next spare isolation helper, and a stopped app takes a moment to go.
const startSettle = 100 * time.Millisecond

// startWarmup is how many spawns of each app are not counted.
const startWarmup = 2

// startSample is one app's timed starts, through Spawner and direct.
type startSample struct {
	n                                         int
	viaSpawner, direct, spawnerCPU, directCPU Durations
}

// sampleStarts times n starts of the late app through b, each followed by
// a direct start.
func sampleStarts(ctx context.Context, b *process.Backend, bin string, delay time.Duration, n int) (startSample, error) {
	s := startSample{n: n}
	for i := range n + startWarmup {
		time.Sleep(startSettle)
		took, cpu, err := timeSpawn(ctx, b, delay)
		if err != nil {
			return s, fmt.Errorf("Start, app ready after %s, spawn %d: %w", delay, i, err)
		}
		time.Sleep(startSettle)
		dtook, dcpu, err := timeDirect(ctx, bin, delay)
		if err != nil {
			return s, fmt.Errorf("direct start, app ready after %s, start %d: %w", delay, i, err)
		}
		if i >= startWarmup {
			s.viaSpawner, s.direct = append(s.viaSpawner, took), append(s.direct, dtook)
			s.spawnerCPU, s.directCPU = append(s.spawnerCPU, cpu), append(s.directCPU, dcpu)
		}
	}
	return s, nil
}

// rows reports p50 and p99 beside the peer, with the overhead goals when
// withGoal.
func (s startSample) rows(what string, withGoal bool) []Row {
	var rows []Row
	for _, pct := range []struct {
		p    float64
		goal time.Duration
	}{{50, 5 * time.Millisecond}, {99, 20 * time.Millisecond}} {
		sp, d := s.viaSpawner.Percentile(pct.p), s.direct.Percentile(pct.p)
		row := Row{Metric: fmt.Sprintf("Start to ready, %s, p%.0f (%d spawns)", what, pct.p, s.n),
			Spawner: fmt.Sprintf("%s (%s)", Ms(sp), SignedMs(sp-d)), Peer: Ms(d), Ratio: Ratio(float64(sp), float64(d)), Met: "—"}
		if withGoal {
			row.Goal, row.Met = "overhead ≤ "+Ms(pct.goal), Met(sp-d <= pct.goal)
		}
		rows = append(rows, row)
	}
	return rows
}

// timeSpawn spawns one session through the backend, returns how long Start
// took and the CPU this process spent in it, and stops the session.
func timeSpawn(ctx context.Context, b *process.Backend, delay time.Duration) (time.Duration, time.Duration, error) {
	id := messages.NewSessionID()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cpu0, t0 := selfCPU(), time.Now()
	_, err := b.Start(startCtx, provisioner.Spec{SessionID: id, Env: map[string]string{readyAfterEnv: delay.String()}})
	took, cpu := time.Since(t0), selfCPU()-cpu0
	if err != nil {
		return 0, 0, err
	}
	return took, cpu, b.Stop(context.WithoutCancel(ctx), id)
}

// timeDirect is timeSpawn's peer: the late app started directly.
func timeDirect(ctx context.Context, bin string, delay time.Duration) (time.Duration, time.Duration, error) {
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cpu0, t0 := selfCPU(), time.Now()
	proc, err := startDirect(startCtx, bin, "late", delay.String())
	took, cpu := time.Since(t0), selfCPU()-cpu0
	if err != nil {
		return 0, 0, err
	}
	_ = proc.Kill()
	return took, cpu, nil
}

// startDirect starts an app the way a user would without Spawner, on a
// free port, and waits with peerAwait; it returns the process, already
// being reaped, to kill.
func startDirect(ctx context.Context, bin string, args ...string) (*os.Process, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "HOST=127.0.0.1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	if err := peerAwait(ctx, exited, "http://127.0.0.1:"+strconv.Itoa(port)+"/status"); err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	return cmd.Process, nil
}

// peerClient is the peer's own HTTP client: a new connection per check,
// as a readiness poll of a new app must make.
var peerClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// peerAwait is the peer's readiness wait, written for the benchmark and
// not taken from Spawner: GET url at a fixed 1 ms until it answers 200
// with "listening": true.
func peerAwait(ctx context.Context, exited <-chan struct{}, url string) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := peerClient.Do(req); err == nil {
			var st struct {
				Listening bool `json:"listening"`
			}
			ok := resp.StatusCode == http.StatusOK && json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&st) == nil && st.Listening
			resp.Body.Close()
			if ok {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("the app exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// selfCPU is the user plus system CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
