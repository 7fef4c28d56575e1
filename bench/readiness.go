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
	logf, err := os.Create(filepath.Join(env.Scratch("spawn-latency"), "backend.log"))
	if err != nil {
		return sec, err
	}
	defer logf.Close()
	cfg := process.Config{Host: "127.0.0.1", StatusSource: "app", StopGrace: time.Second,
		Isolation: process.IsolationAuto, UIDRange: process.DefaultUIDRange}
	command := "exec " + env.UpstreamBin + " late $" + readyAfterEnv
	b, err := process.New(cfg, command, nil, slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return sec, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	exits := make(chan provisioner.Exit, 16)
	ran := make(chan error, 1)
	go func() { ran <- b.Run(runCtx, exits) }()
	go func() {
		for range exits { // apps end only when stopped here; nothing to answer
		}
	}()
	defer func() { cancel(); <-ran }()

	const warmup = 2
	for _, app := range readyApps {
		n := pick(env, app.full, app.quick)
		var viaSpawner, direct, spawnerCPU, directCPU Durations
		for i := range n + warmup {
			took, cpu, err := timeStart(ctx, b, app.delay)
			if err != nil {
				return sec, fmt.Errorf("Start, app ready after %s, spawn %d: %w", app.delay, i, err)
			}
			dtook, dcpu, err := timeDirect(ctx, env.UpstreamBin, app.delay)
			if err != nil {
				return sec, fmt.Errorf("direct start, app ready after %s, start %d: %w", app.delay, i, err)
			}
			if i >= warmup {
				viaSpawner, direct = append(viaSpawner, took), append(direct, dtook)
				spawnerCPU, directCPU = append(spawnerCPU, cpu), append(directCPU, dcpu)
			}
		}
		for _, pct := range []struct {
			p    float64
			goal time.Duration
		}{{50, 5 * time.Millisecond}, {99, 20 * time.Millisecond}} {
			s, d := viaSpawner.Percentile(pct.p), direct.Percentile(pct.p)
			sec.Rows = append(sec.Rows, Row{
				Metric:  fmt.Sprintf("Start to ready, app ready after %s, p%.0f (%d spawns)", app.delay, pct.p, n),
				Spawner: fmt.Sprintf("%s (%s)", Ms(s), SignedMs(s-d)), Peer: Ms(d), Ratio: Ratio(float64(s), float64(d)),
				Goal: "overhead ≤ " + Ms(pct.goal), Met: Met(s-d <= pct.goal)})
		}
		if app.delay >= time.Second {
			s, d := spawnerCPU.Mean(), directCPU.Mean()
			sec.Rows = append(sec.Rows, Row{
				Metric:  fmt.Sprintf("CPU per spawn while waiting, app ready after %s (mean)", app.delay),
				Spawner: Ms(s), Peer: Ms(d), Ratio: Ratio(float64(s), float64(d)),
				Goal: "≤ a tenth of a core over the wait", Met: Met(s <= app.delay/10)})
		}
	}
	sec.Notes = append(sec.Notes,
		fmt.Sprintf("Spawner's figure is the process backend's Start as the provisioner calls it (isolation %q, status source app), "+
			"with its shared readiness wait (provisioner.AwaitReady); the app is benchupstream late, which listens only after the delay.", b.Isolation()),
		fmt.Sprintf("Each app's first %d spawns are a warm-up and not counted. Apps are stopped between spawns, outside the timed calls.", warmup),
		"CPU is getrusage(RUSAGE_SELF) of the benchmark process around each timed call: the backend's (or the peer's) own work "+
			"while it starts and waits, not the app's.")
	return sec, nil
}

// timeStart spawns one session through the backend, returns how long Start
// took and the CPU this process spent in it, and stops the session.
func timeStart(ctx context.Context, b *process.Backend, delay time.Duration) (time.Duration, time.Duration, error) {
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

// timeDirect is timeStart's peer: the late app started directly.
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
