package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SpawnThroughput runs N clients that each spawn and delete sessions in a
// loop, for several N, against N workers starting the demo app directly.
func SpawnThroughput(ctx context.Context, env *Env) (Section, error) {
	sec := Section{Title: "Spawn throughput, process backend",
		PeerName: "the same number of workers each starting the demo app directly, waiting for its /status (polled every 1 ms) and killing it"}
	p, err := startInProcess(ctx, env, "spawn-throughput")
	if err != nil {
		return sec, err
	}
	defer func() { _ = p.stop() }()
	d := pick(env, 5*time.Second, 2*time.Second)
	levels := []int{1, 4, 16, 64}
	var bestRate float64
	var bestAt int
	var profile []byte
	var selfCores float64
	for _, n := range levels {
		var prof *bytes.Buffer
		if n == levels[len(levels)-1] {
			prof = &bytes.Buffer{}
		}
		cpu0, t0 := mustCPU(os.Getpid()), time.Now()
		rate, failed, err := spawnLoad(ctx, p, n, d, prof)
		if err != nil {
			return sec, err
		}
		selfCores = (mustCPU(os.Getpid()) - cpu0).Seconds() / time.Since(t0).Seconds()
		if prof != nil {
			profile = prof.Bytes()
		}
		peer, peerFailed, err := directLoad(ctx, env.SpawnerBin, n, d)
		if err != nil {
			return sec, err
		}
		env.Log.Info("spawn throughput", "clients", n, "spawner", rate, "direct", peer, "failed", failed, "direct_failed", peerFailed)
		if rate > bestRate {
			bestRate, bestAt = rate, n
		}
		clients := "clients"
		if n == 1 {
			clients = "client"
		}
		row := Row{Metric: fmt.Sprintf("sessions/s with %d parallel %s (spawn, then delete)", n, clients),
			Spawner: fmt.Sprintf("%.1f", rate), Peer: fmt.Sprintf("%.1f", peer), Ratio: Ratio(rate, peer), Met: "—"}
		if failed > 0 {
			row.Spawner += fmt.Sprintf(" (%d failed)", failed)
		}
		if peerFailed > 0 {
			row.Peer += fmt.Sprintf(" (%d failed)", peerFailed)
		}
		sec.Rows = append(sec.Rows, row)
	}
	sec.Notes = append(sec.Notes, fmt.Sprintf("Spawner peaks at %.1f sessions/s with %d clients. Each level runs %s; a client's loop is POST /init then DELETE /sessions/<id>, and only spawns are counted.", bestRate, bestAt, d))
	sec.Notes = append(sec.Notes, fmt.Sprintf("With %d clients the Spawner process (control plane and load clients together) used %.2f of the machine's %d cores; the rest went to starting, running and stopping the apps, which is what saturates first.",
		levels[len(levels)-1], selfCores, ThisMachine().Cores))
	if top, err := pprofTop(env, profile); err == nil {
		sec.Notes = append(sec.Notes, fmt.Sprintf("CPU profile of the Spawner process (control plane and the load clients; the apps are other processes) with %d clients, top functions by cumulative time:", levels[len(levels)-1]),
			"```\n"+top+"```")
	} else {
		sec.Notes = append(sec.Notes, "no profile: "+err.Error())
	}
	return sec, nil
}

// spawnLoad runs n clients for d and returns completed spawns per second.
func spawnLoad(ctx context.Context, p *inProcess, n int, d time.Duration, prof *bytes.Buffer) (float64, int64, error) {
	var done, failed atomic.Int64
	loadCtx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if prof != nil {
		if err := pprof.StartCPUProfile(prof); err != nil {
			return 0, 0, err
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				id, err := p.spawn(ctx)
				if err != nil {
					failed.Add(1)
					continue
				}
				if time.Since(start) <= d {
					done.Add(1)
				}
				_ = p.remove(ctx, id)
			}
		})
	}
	wg.Wait()
	if prof != nil {
		pprof.StopCPUProfile()
	}
	if ctx.Err() != nil {
		return 0, 0, ctx.Err()
	}
	return float64(done.Load()) / d.Seconds(), failed.Load(), nil
}

// directLoad is spawnLoad without Spawner. A start can fail when two
// workers draw the same free port, as Spawner's spawns can; failures are
// counted, not fatal.
func directLoad(ctx context.Context, bin string, n int, d time.Duration) (float64, int64, error) {
	var done, failed atomic.Int64
	loadCtx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				proc, err := startDirect(ctx, bin, "demo")
				if err != nil {
					failed.Add(1)
					continue
				}
				if time.Since(start) <= d {
					done.Add(1)
				}
				_ = proc.Kill()
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return 0, 0, ctx.Err()
	}
	return float64(done.Load()) / d.Seconds(), failed.Load(), nil
}

// pprofTop renders a CPU profile as go tool pprof's top list.
func pprofTop(env *Env, profile []byte) (string, error) {
	if len(profile) == 0 {
		return "", fmt.Errorf("empty profile")
	}
	path := filepath.Join(env.Dir, "throughput.pprof")
	if err := os.WriteFile(path, profile, 0o644); err != nil {
		return "", err
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=25", exe, path).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("pprof: %w: %s", err, out)
	}
	// Keep the table, not pprof's preamble about the binary.
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			return strings.Join(lines[max(0, i-1):], "\n"), nil
		}
	}
	return string(out), nil
}
