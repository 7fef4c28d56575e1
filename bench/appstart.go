package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// AppStart times what every session pays before its app answers: from
// exec to the first HTTP answer, for the lean spawner-demo binary (the
// default app and sidecar), for the same modes of the full spawner
// binary, and for a minimal Go HTTP server (benchupstream app) as the peer.
func AppStart(ctx context.Context, env *Env) (Section, error) {
	sec := Section{Title: "App start, exec to first answer",
		PeerName: "a minimal Go HTTP server (`benchupstream app`), timed the same way"}
	lean := filepath.Join(filepath.Dir(env.SpawnerBin), "spawner-demo")
	if _, err := os.Stat(lean); err != nil {
		return sec, fmt.Errorf("spawner-demo beside %s: %w (make build puts it there)", env.SpawnerBin, err)
	}
	n := pick(env, 100, 15)
	const warmup = 5
	// The starts interleave, so that every kind sees the same machine.
	kinds := []struct {
		name string
		run  func(port int) *exec.Cmd
		path string
	}{
		{"peer", func(port int) *exec.Cmd {
			return exec.Command(env.UpstreamBin, "app", "127.0.0.1:"+strconv.Itoa(port))
		}, "/"},
		{"lean demo", func(port int) *exec.Cmd {
			c := exec.Command(lean)
			c.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "HOST=127.0.0.1")
			return c
		}, "/status"},
		{"full demo", func(port int) *exec.Cmd {
			c := exec.Command(env.SpawnerBin, "demo")
			c.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "HOST=127.0.0.1")
			return c
		}, "/status"},
		{"lean sidecar", func(port int) *exec.Cmd {
			c := exec.Command(lean, "sidecar")
			c.Env = append(os.Environ(), "SPAWNER_APP_PORT=1", "SPAWNER_SIDECAR_ADDR=127.0.0.1:"+strconv.Itoa(port))
			return c
		}, "/status"},
	}
	took := make([]Durations, len(kinds))
	for i := range n + warmup {
		for k, kind := range kinds {
			d, err := timeStart(ctx, kind.run, kind.path)
			if err != nil {
				return sec, fmt.Errorf("%s, start %d: %w", kind.name, i, err)
			}
			if i >= warmup {
				took[k] = append(took[k], d)
			}
		}
	}
	peer := took[0].Percentile(50)
	const goal = 15 * time.Millisecond
	row := func(metric string, d Durations, withGoal bool) Row {
		p := d.Percentile(50)
		r := Row{Metric: fmt.Sprintf("%s, p50 (%d starts)", metric, n), Spawner: Ms(p), Peer: Ms(peer),
			Ratio: Ratio(float64(p), float64(peer)), Goal: "—", Met: "—"}
		if withGoal {
			r.Goal, r.Met = "≤ "+Ms(goal), Met(p <= goal)
		}
		return r
	}
	sec.Rows = append(sec.Rows,
		row("demo app ready (`spawner-demo`, the default app)", took[1], true),
		row("sidecar ready (`spawner-demo sidecar`)", took[3], true),
		row("demo app ready (`spawner demo`, the full binary)", took[2], false))
	sec.Notes = append(sec.Notes,
		"Each start is timed from exec until the first HTTP answer on /status (/ for the peer), polled every 0.5 ms; the process is then killed. "+
			"The full binary's demo mode pays for loading every mode and its package init (client-go's schemes, the Docker client), which GODEBUG=inittrace=1 shows; spawner-demo links only the demo and the sidecar.")
	return sec, nil
}

// timeStart starts a process on a free port and returns how long it took
// to answer path over HTTP.
func timeStart(ctx context.Context, run func(port int) *exec.Cmd, path string) (time.Duration, error) {
	port, err := FreePort()
	if err != nil {
		return 0, err
	}
	cmd := run(port)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	url := "http://127.0.0.1:" + strconv.Itoa(port) + path
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() { _ = cmd.Process.Kill(); <-exited }()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return time.Since(start), nil
		}
		select {
		case <-exited:
			return 0, errors.New("exited before it answered")
		case <-ctx.Done():
			return 0, fmt.Errorf("no answer at %s: %w", url, ctx.Err())
		case <-time.After(500 * time.Microsecond):
		}
	}
}
