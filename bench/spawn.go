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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// inProcess is an all-in-one Spawner running in this process through
// app.Main, as the end-to-end tests run it, so it can be profiled.
type inProcess struct {
	main   *app.Main
	url    string
	client *http.Client
	stop   func() error
}

func startInProcess(ctx context.Context, env *Env, name string) (*inProcess, error) {
	for _, kv := range os.Environ() {
		// The caller's own settings must not change what is measured.
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, app.EnvPrefix+"_") && k != "SPAWNER_TEST_KUBECONFIG" {
			os.Unsetenv(k)
		}
	}
	cfg, err := app.LoadConfig()
	if err != nil {
		return nil, err
	}
	dir := env.Scratch(name)
	cfg.Common.DataDir = filepath.Join(dir, "data")
	cfg.Bus.Listen = "127.0.0.1:-1"
	cfg.Gateway.HTTPAddr = "127.0.0.1:0"
	logf, err := os.Create(filepath.Join(dir, "spawner.log"))
	if err != nil {
		return nil, err
	}
	m := app.NewMain(cfg, slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	m.DemoCommand = env.SpawnerBin + " demo"
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx, app.ModeAll) }()
	select {
	case <-m.Started():
	case err := <-done:
		cancel()
		logf.Close()
		return nil, fmt.Errorf("spawner exited at start: %w", err)
	case <-time.After(30 * time.Second):
		cancel()
		return nil, errors.New("spawner did not start within 30s")
	}
	p := &inProcess{main: m, url: "http://" + m.HTTPAddr(),
		client: &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	p.stop = func() error {
		cancel()
		err := <-done
		logf.Close()
		return err
	}
	// Started does not promise that the provisioner has subscribed yet;
	// the first successful spawn does.
	deadline := time.Now().Add(30 * time.Second)
	for {
		id, err := p.spawn(ctx)
		if err == nil {
			_ = p.remove(ctx, id)
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.stop()
			return nil, fmt.Errorf("first spawn: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// spawn calls POST /init and returns the new session's id.
func (p *inProcess) spawn(ctx context.Context) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/init", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /init: %s: %s", resp.Status, body)
	}
	var rep messages.SpawnReply
	if err := json.Unmarshal(body, &rep); err != nil || rep.SessionID == "" {
		return "", fmt.Errorf("POST /init answered %s", body)
	}
	return rep.SessionID, nil
}

func (p *inProcess) remove(ctx context.Context, id string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, p.url+"/sessions/"+id, nil)
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("DELETE /sessions/%s: %s", id, resp.Status)
	}
	return nil
}

// startDirect starts the demo app the way a user would without Spawner
// and waits with the process backend's readiness loop; it returns the
// process, already being reaped, to kill.
func startDirect(ctx context.Context, bin string) (*os.Process, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "demo")
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "HOST=127.0.0.1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	if err := awaitStatus(ctx, exited, "http://127.0.0.1:"+strconv.Itoa(port)+"/status"); err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	return cmd.Process, nil
}

var readyChecker = provisioner.NewStatusChecker()

// awaitStatus is provisioner/process's readiness loop (ready.go): the
// same status checker, polled with the same backoff.
func awaitStatus(ctx context.Context, exited <-chan struct{}, url string) error {
	for attempt := 0; ; attempt++ {
		if ok, _ := readyChecker.Listening(ctx, url); ok {
			return nil
		}
		select {
		case <-exited:
			return errors.New("the app exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(readyBackoff(attempt)):
		}
	}
}

// readyBackoff is provisioner/process's backoff.
func readyBackoff(attempt int) time.Duration {
	if attempt < readyFastPolls {
		return time.Millisecond
	}
	return min(time.Millisecond<<min(attempt-readyFastPolls+1, 6), 50*time.Millisecond)
}

const readyFastPolls = 50

// removeAll deletes sessions with a few callers at once.
func (p *inProcess) removeAll(ctx context.Context, ids []string) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = p.remove(ctx, id)
		})
	}
	wg.Wait()
}

// SpawnLatency times POST /init to a ready URL on the process backend,
// interleaved with starting the same demo app directly.
func SpawnLatency(ctx context.Context, env *Env) (Section, error) {
	sec := Section{Title: "Spawn latency, process backend", PeerName: "starting the same demo app directly (`spawner demo` with PORT) and polling its /status with the same readiness loop"}
	p, err := startInProcess(ctx, env, "spawn-latency")
	if err != nil {
		return sec, err
	}
	defer func() { _ = p.stop() }()
	n := pick(env, 200, 30)
	const warmup = 10
	var viaSpawner, direct Durations
	var ids []string
	defer func() { p.removeAll(context.WithoutCancel(ctx), ids) }()
	for i := range n + warmup {
		start := time.Now()
		id, err := p.spawn(ctx)
		took := time.Since(start)
		if err != nil {
			return sec, fmt.Errorf("spawn %d: %w", i, err)
		}
		ids = append(ids, id)
		start = time.Now()
		proc, err := startDirect(ctx, env.SpawnerBin)
		dtook := time.Since(start)
		if err != nil {
			return sec, fmt.Errorf("direct start %d: %w", i, err)
		}
		_ = proc.Kill()
		if i >= warmup {
			viaSpawner = append(viaSpawner, took)
			direct = append(direct, dtook)
		}
		if len(ids) >= 50 { // keep the machine from filling with idle apps
			p.removeAll(ctx, ids)
			ids = ids[:0]
		}
	}
	for _, pct := range []struct {
		p    float64
		goal time.Duration
	}{{50, 5 * time.Millisecond}, {99, 20 * time.Millisecond}} {
		s, d := viaSpawner.Percentile(pct.p), direct.Percentile(pct.p)
		sec.Rows = append(sec.Rows, Row{Metric: fmt.Sprintf("/init to ready URL, p%.0f (%d spawns)", pct.p, n),
			Spawner: fmt.Sprintf("%s (%s)", Ms(s), SignedMs(s-d)), Peer: Ms(d), Ratio: Ratio(float64(s), float64(d)),
			Goal: "overhead ≤ " + Ms(pct.goal), Met: Met(s-d <= pct.goal)})
	}
	sec.Notes = append(sec.Notes, "Each spawn is followed by one direct start, so both see the same machine. Sessions are deleted in batches of 50 between spawns, outside the timed calls.")
	return sec, nil
}
