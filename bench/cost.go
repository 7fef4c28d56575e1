package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// splitPlane is Spawner as a scaled-out installation runs it: a NATS
// server and each component as its own process, so that the cost of each
// can be read from /proc apart from the others.
type splitPlane struct {
	*ControlPlane
	dir     string
	env     []string
	servers []*Child // nats, gateway, provisioner, reaper
	probers []*Child
}

// startSplitPlane starts "spawner nats", the gateway, the provisioner, the
// reaper and n probers, all with one full-rights NATS user, and waits
// until the gateway is ready.
func startSplitPlane(ctx context.Context, bin, dir string, probers int, extra ...string) (*splitPlane, error) {
	httpPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	natsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	password := rand.Text()
	natsURL := "nats://127.0.0.1:" + strconv.Itoa(natsPort)
	env := append([]string{
		"SPAWNER_HTTP_ADDR=127.0.0.1:" + strconv.Itoa(httpPort),
		"SPAWNER_DATA_DIR=" + filepath.Join(dir, "data"),
		"SPAWNER_LOG_LEVEL=warn",
		"SPAWNER_NATS_USER=bench",
		"SPAWNER_NATS_PASSWORD=" + password,
	}, extra...)
	sp := &splitPlane{dir: dir, env: append(env[:len(env):len(env)], "SPAWNER_NATS_URL="+natsURL)}
	natsProc, err := StartChild(filepath.Join(dir, "nats.log"), append(env[:len(env):len(env)], "SPAWNER_NATS_LISTEN=127.0.0.1:"+strconv.Itoa(natsPort)), bin, "nats")
	if err != nil {
		return nil, err
	}
	sp.servers = append(sp.servers, natsProc)
	sp.ControlPlane = &ControlPlane{Child: natsProc, HTTPURL: "http://127.0.0.1:" + strconv.Itoa(httpPort),
		NATSURL: natsURL, natsPassword: password}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(natsPort), time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if waitCtx.Err() != nil {
			sp.Stop()
			return nil, fmt.Errorf("spawner nats does not listen: %w (logs in %s)", err, dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, mode := range []string{"provisioner", "reaper", "gateway"} {
		c, err := StartChild(filepath.Join(dir, mode+".log"), sp.env, bin, mode)
		if err != nil {
			sp.Stop()
			return nil, err
		}
		sp.servers = append(sp.servers, c)
	}
	if err := WaitHTTP(waitCtx, sp.HTTPURL+"/readyz"); err != nil {
		sp.Stop()
		return nil, fmt.Errorf("split control plane: %w (logs in %s)", err, dir)
	}
	if err := sp.connect(waitCtx); err != nil {
		sp.Stop()
		return nil, err
	}
	for range probers {
		if err := sp.addProber(); err != nil {
			sp.Stop()
			return nil, err
		}
	}
	return sp, nil
}

func (sp *splitPlane) addProber() error {
	c, err := StartChild(filepath.Join(sp.dir, fmt.Sprintf("prober-%d.log", len(sp.probers))), sp.env, sp.ControlPlane.Child.Cmd.Path, "prober")
	if err != nil {
		return err
	}
	sp.probers = append(sp.probers, c)
	return nil
}

func (sp *splitPlane) all() []*Child {
	return append(sp.servers[:len(sp.servers):len(sp.servers)], sp.probers...)
}

// Stop ends every process, the NATS server last.
func (sp *splitPlane) Stop() {
	if sp.NC != nil {
		sp.NC.Close()
	}
	for _, c := range sp.probers {
		c.Stop(10 * time.Second)
	}
	for i := len(sp.servers) - 1; i >= 0; i-- {
		sp.servers[i].Stop(10 * time.Second)
	}
}

func rssOf(cs []*Child) int64 {
	var sum int64
	for _, c := range cs {
		if r, err := RSS(c.Pid()); err == nil {
			sum += r
		}
	}
	return sum
}

// costSample is what one size costs.
type costSample struct {
	sessions        int
	cores, rssBytes float64 // over the idle plane, per 1,000 sessions
	proberCores     float64 // the one prober's own
	reap            []Row
}

// Cost measures the control plane's CPU and memory per 1,000 live
// sessions at three sizes, with every component its own process, and
// what each of three sharded probers spends against one prober alone.
func Cost(ctx context.Context, env *Env) ([]Section, error) {
	sec := Section{Title: "Cost as sessions grow",
		PeerName: "the same figure at the smallest size; for the probers, one prober alone on the same sessions"}
	const interval = 5 * time.Second
	sizes := pick(env, []int{1_000, 10_000, 30_000}, []int{200, 1_000, 2_000})
	shardAt := sizes[1]
	var samples []costSample
	for _, n := range sizes {
		s, shard, err := costAt(ctx, env, n, interval, n == shardAt)
		if err != nil {
			sec.Notes = append(sec.Notes, fmt.Sprintf("%d sessions FAILED: %v", n, err))
			break
		}
		samples = append(samples, s)
		sec.Rows = append(sec.Rows, shard...)
	}
	if len(samples) == 0 {
		return []Section{sec}, nil
	}
	base := samples[0]
	var rows []Row
	for _, s := range samples {
		goal, met := "—", "—"
		if s.sessions != base.sessions {
			goal, met = "≤ 1.2× the smallest size", ""
		}
		cpu := Row{Metric: fmt.Sprintf("control-plane CPU per 1,000 sessions, %d live, 1 prober (all processes)", s.sessions),
			Spawner: fmt.Sprintf("%.4f cores", s.cores), Peer: fmt.Sprintf("%.4f cores", base.cores),
			Ratio: Ratio(s.cores, base.cores), Goal: goal, Met: met}
		mem := Row{Metric: fmt.Sprintf("RSS per 1,000 sessions over the idle plane, %d live", s.sessions),
			Spawner: fmt.Sprintf("%.1f MB", s.rssBytes/1e6), Peer: fmt.Sprintf("%.1f MB", base.rssBytes/1e6),
			Ratio: Ratio(s.rssBytes, base.rssBytes), Goal: goal, Met: met}
		if met == "" {
			cpu.Met = Met(s.cores <= 1.2*base.cores)
			mem.Met = Met(s.rssBytes <= 1.2*base.rssBytes)
		}
		rows = append(rows, cpu, mem)
		rows = append(rows, s.reap...)
	}
	sec.Rows = append(rows, sec.Rows...)
	sec.Notes = append(sec.Notes,
		fmt.Sprintf("Each size runs on a fresh control plane of separate processes (spawner nats, gateway, provisioner, reaper, probers), with %s probes. CPU is read from /proc over four quiet intervals after two intervals of warm-up; RSS is the sum over the processes, less the same sum before any session was registered.", interval),
		"Sessions are registry records whose /status is served by benchupstream, one loopback address per session, as in the section on the prober at 10,000 sessions; the reap rows let 1,000 more go idle at once over the live ones.")
	return []Section{sec}, nil
}

// costAt measures one size; with shard it then starts two more probers
// and reads each one's share against the single prober before them.
func costAt(ctx context.Context, env *Env, n int, interval time.Duration, shard bool) (costSample, []Row, error) {
	s := costSample{sessions: n}
	dir := env.Scratch(fmt.Sprintf("cost-%d", n))
	sp, err := startSplitPlane(ctx, env.SpawnerBin, dir, 1, "SPAWNER_PROBE_INTERVAL="+interval.String())
	if err != nil {
		return s, nil, err
	}
	defer sp.Stop()
	time.Sleep(2 * time.Second)
	idleRSS := rssOf(sp.all())
	servers, addrs, err := statusServers(ctx, env, dir, n, 0, time.Time{})
	if err != nil {
		return s, nil, err
	}
	defer stopAll(servers)
	sessions := make([]messages.Session, len(addrs))
	for i, a := range addrs {
		sessions[i] = FakeSession(a, "http://"+a+"/status", 3600)
	}
	if err := sp.Register(ctx, sessions); err != nil {
		return s, nil, fmt.Errorf("register %d sessions: %w", n, err)
	}
	time.Sleep(2*interval + time.Second)
	window := pick(env, 4*interval, 2*interval)
	per1k := float64(n) / 1000
	all := sp.all()
	cpu0, prober0, t0 := cpuOf(all), cpuOf(sp.probers), time.Now()
	time.Sleep(window)
	cpu1, prober1, el := cpuOf(all), cpuOf(sp.probers), time.Since(t0).Seconds()
	s.cores = (cpu1 - cpu0).Seconds() / el / per1k
	s.proberCores = (prober1 - prober0).Seconds() / el
	s.rssBytes = float64(rssOf(all)-idleRSS) / per1k
	env.Log.Info("cost", "sessions", n, "cores_per_1k", s.cores, "rss_mb_per_1k", s.rssBytes/1e6, "prober_cores", s.proberCores)

	reap, err := reapAccuracy(ctx, env, sp.ControlPlane, dir, n, interval)
	if err != nil {
		return s, nil, fmt.Errorf("reap at %d sessions: %w", n, err)
	}
	for i := range reap {
		reap[i].Metric += fmt.Sprintf(" (%d live, split processes)", n)
	}
	s.reap = reap[1:] // the p99, which has the goal
	if !shard {
		return s, nil, nil
	}
	rows, err := shardShare(env, sp, s.proberCores, n, interval, window)
	return s, rows, err
}

// shardShare adds two probers to a plane that had one, waits for the
// shares to move, and compares each prober's CPU with the lone one's.
func shardShare(env *Env, sp *splitPlane, alone float64, n int, interval, window time.Duration) ([]Row, error) {
	for range 2 {
		if err := sp.addProber(); err != nil {
			return nil, err
		}
	}
	time.Sleep(3 * interval)
	before := make([]time.Duration, len(sp.probers))
	for i, p := range sp.probers {
		before[i] = mustCPU(p.Pid())
	}
	t0 := time.Now()
	time.Sleep(window)
	el := time.Since(t0).Seconds()
	var rows []Row
	for i, p := range sp.probers {
		cores := (mustCPU(p.Pid()) - before[i]).Seconds() / el
		env.Log.Info("sharded prober", "prober", i, "cores", cores, "alone", alone)
		rows = append(rows, Row{Metric: fmt.Sprintf("prober %d of 3, CPU at %d live sessions", i+1, n),
			Spawner: fmt.Sprintf("%.3f cores", cores), Peer: fmt.Sprintf("%.3f cores", alone),
			Ratio: Ratio(cores, alone), Goal: "≤ 0.4× one prober alone", Met: Met(cores <= 0.4*alone)})
	}
	return rows, nil
}
