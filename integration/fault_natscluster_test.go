package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/messages"
)

// The cluster fault run's shape. It is the single-server run's churn on
// three NATS servers with two replicas of every component. The kills are
// spaced so that each recovery (a leader election, a restarted server
// catching up, a replica's share moving) ends before the next kill, and
// the last one is well before the churn ends.
const (
	clusterFaultProbeInterval = 500 * time.Millisecond
	clusterFaultMinChurn      = 90 * time.Second
	clusterFaultMaxChurn      = 150 * time.Second
	clusterFaultMinAccepted   = 200
	// clusterFaultLeaderLoss is how long after a NATS server's restart a
	// gap may still come from its kill, and clusterFaultLeaderGap how long
	// such a gap may be: a component's registry watch on a stream whose
	// leader died is found stalled only by its missed idle heartbeats,
	// after about 5s, and until then a prober does not know the sessions
	// created meanwhile, which its peer leaves to it.
	clusterFaultLeaderLoss = 10 * time.Second
	clusterFaultLeaderGap  = 2*clusterFaultProbeInterval + 6*time.Second
)

// clusterFaultKills names processes, or "meta-leader" and "bucket-leader"
// for the server that leads the JetStream meta group, or the session
// bucket's stream, at the time of the kill.
var clusterFaultKills = []struct {
	at       time.Duration
	name     string
	downtime time.Duration
}{
	{8 * time.Second, "provisioner-1", time.Second},
	{18 * time.Second, "meta-leader", 2 * time.Second},
	{32 * time.Second, "prober-1", time.Second},
	{40 * time.Second, "reaper-1", time.Second},
	{48 * time.Second, "gateway-2", time.Second},
	{56 * time.Second, "bucket-leader", 2 * time.Second},
	{70 * time.Second, "provisioner-2", 2 * time.Second},
}

// clusterFaultComponents are the component replicas, each its own process.
var clusterFaultComponents = []string{"provisioner-1", "provisioner-2", "prober-1", "prober-2",
	"reaper-1", "reaper-2", "gateway-1", "gateway-2"}

// TestFaultInjectionOnNATSCluster is TestFaultInjection on three "spawner
// nats" servers forming one cluster (every stream and the bucket R3), with
// two replicas of every component. It SIGKILLs, each in turn, and
// restarts: a provisioner, the server leading the JetStream meta group, a
// prober, a reaper, a gateway, the server leading the session bucket, the
// other provisioner. Then it checks the single-server run's invariant, and
// that no session that was ready went unprobed for more than two probe
// intervals, from the heartbeats.
func TestFaultInjectionOnNATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("the cluster fault-injection run takes about two and a half minutes")
	}
	c := newFaultClusterOf(t, faultLayout{NATSServers: 3, Gateways: 2},
		"SPAWNER_PROBE_INTERVAL="+clusterFaultProbeInterval.String())
	for _, name := range c.ServerNames() {
		if err := c.Start(name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.AwaitMetaLeader(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, name := range clusterFaultComponents {
		if err := c.Start(name); err != nil {
			t.Fatal(err)
		}
	}
	subj, _ := messages.NewSubjects(messages.DefaultPrefix)
	streams := []string{"KV_" + subj.SessionBucket(), subj.EventStream()}
	if _, err := c.AwaitStreamsCurrent(30*time.Second, streams...); err != nil {
		t.Fatal(err)
	}
	var serverURLs []string
	for _, name := range c.ServerNames() {
		serverURLs = append(serverURLs, c.ServerURL(name))
	}
	events := faultWatchEvents(t, c.NATSURL, c.NATSOptions(bus.RoleClient)...)
	beats := faultWatchHeartbeats(t, serverURLs, c.NATSOptions(bus.RoleOps)...)
	loadNC, err := faultDial(c.NATSURL, "fault-load", c.NATSOptions(bus.RoleClient)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(loadNC.Close)
	load := newFaultChurn(c.GatewayURLs, loadNC)
	appCtx, stopApps := context.WithCancel(context.Background())
	t.Cleanup(stopApps)
	apps := watchFaultApps(appCtx, c.Tag, 300*time.Millisecond)

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
	// serverDown holds when each NATS server kill began and when its
	// effects may last until.
	var serverDown [][2]time.Time
	for _, k := range clusterFaultKills {
		time.Sleep(time.Until(start.Add(k.at)))
		name, what := k.name, k.name
		if k.name == "meta-leader" || k.name == "bucket-leader" {
			// A server is killed only once the streams have a quorum
			// without it, as they do when the last one has caught up.
			if took, err := c.AwaitStreamsCurrent(30*time.Second, streams...); err != nil {
				t.Fatalf("%.1fs: the streams did not catch up within %s: %v", time.Since(start).Seconds(), took, err)
			}
			if k.name == "meta-leader" {
				name, err = c.MetaLeader()
			} else {
				name, err = c.StreamLeader(streams[0])
			}
			if err != nil {
				t.Fatal(err)
			}
			meta, _ := c.MetaLeader()
			bucket, _ := c.StreamLeader(streams[0])
			what = fmt.Sprintf("%s (%s; meta leader %s, bucket leader %s)", name, k.name, meta, bucket)
		}
		killedAt := time.Now()
		if err := c.Kill(name); err != nil {
			t.Fatal(err)
		}
		time.Sleep(k.downtime)
		if err := c.Start(name); err != nil {
			t.Fatal(err)
		}
		if faultMode(name) == "nats" {
			serverDown = append(serverDown, [2]time.Time{killedAt, time.Now().Add(clusterFaultLeaderLoss)})
		}
		line := fmt.Sprintf("%5.1fs: killed %s, restarted it after %s (%d sessions accepted so far)",
			time.Since(start).Seconds(), what, k.downtime, len(load.accepted()))
		timeline = append(timeline, line)
		t.Log(line)
	}
	for time.Since(start) < clusterFaultMaxChurn && (time.Since(start) < clusterFaultMinChurn || len(load.accepted()) < clusterFaultMinAccepted) {
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
	stopApps()
	report.AppsOutlived = apps.outlived(events, time.Second)
	gaps := beats.gaps(events.readyTimes())
	report.ProbeIntervalSeconds = clusterFaultProbeInterval.Seconds()
	report.SessionsProbed, report.HeartbeatsHeard = gaps.Sessions, beats.heardTotal()
	for _, g := range gaps.Worst[:min(5, len(gaps.Worst))] {
		report.LongestProbeGaps = append(report.LongestProbeGaps, fmt.Sprintf("%.2fs for session %s, from %.1fs to %.1fs",
			g.Gap.Seconds(), g.Session, g.From.Sub(start).Seconds(), g.To.Sub(start).Seconds()))
	}
	if n := len(gaps.FirstProbe); n > 0 {
		report.FirstProbeSeconds = map[string]float64{"p50": gaps.FirstProbe[n/2].Seconds(),
			"p99": gaps.FirstProbe[n*99/100].Seconds(), "max": gaps.FirstProbe[n-1].Seconds()}
	}

	// Stop the way an orchestrator does; the process backend's sessions
	// cannot outlive their provisioner, so none may be left.
	for _, name := range clusterFaultComponents {
		if err := c.Stop(name, 30*time.Second); err != nil {
			t.Error(err)
		}
	}
	report.AppsAfterStop = len(faultAwaitNoApps(c.Tag, 10*time.Second))
	for _, name := range c.ServerNames() {
		if err := c.Stop(name, 15*time.Second); err != nil {
			t.Error(err)
		}
	}
	writeFaultReport(t, report)
	if err := events.dump(filepath.Join(c.logDir, "events.jsonl")); err != nil {
		t.Error(err)
	}
	t.Logf("component logs and events are in %s", c.logDir)

	if v.err != nil {
		t.Errorf("checking the invariant: %v", v.err)
	}
	if report.SessionsAccepted < clusterFaultMinAccepted {
		t.Errorf("only %d sessions were accepted, want at least %d", report.SessionsAccepted, clusterFaultMinAccepted)
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
	for _, p := range report.AppsOutlived {
		t.Errorf("app outlived its session: %s", p)
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
	if gaps.Sessions < clusterFaultMinAccepted/2 {
		t.Errorf("only %d sessions were probed", gaps.Sessions)
	}
	for _, g := range gaps.Worst {
		if g.Gap <= 2*clusterFaultProbeInterval {
			break
		}
		bound, when := 2*clusterFaultProbeInterval, "two intervals"
		for _, w := range serverDown {
			if g.To.After(w[0]) && g.From.Before(w[1]) {
				bound, when = clusterFaultLeaderGap, "two intervals and a stalled registry watch, after a NATS server's kill"
			}
		}
		if g.Gap > bound {
			t.Errorf("session %s went unprobed for %.2fs, from %.1fs to %.1fs into the churn; want at most %s (%s)",
				g.Session, g.Gap.Seconds(), g.From.Sub(start).Seconds(), g.To.Sub(start).Seconds(), bound, when)
		}
	}
}
