package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/spawnerhq/spawner/messages"
)

// Proxy measures HTTP through /p/<id>/ against the same app direct and
// behind nginx, and WebSocket echo round trips through the proxy.
func Proxy(ctx context.Context, env *Env) (Section, error) {
	sec := Section{Title: "Proxy", PeerName: "nginx proxying the same app (keepalive upstream, worker_processes auto), or the app direct where the row says"}
	dir := env.Scratch("proxy")
	app, addrs, err := StartHelper(ctx, filepath.Join(dir, "app.log"), env.UpstreamBin, "app", "127.0.0.1:0")
	if err != nil {
		return sec, err
	}
	defer app.Stop(5 * time.Second)
	if len(addrs) != 1 {
		return sec, fmt.Errorf("app printed %q", addrs)
	}
	upstream := addrs[0]
	cp, err := StartControlPlane(ctx, env.SpawnerBin, dir)
	if err != nil {
		return sec, err
	}
	defer cp.Stop()
	s := FakeSession(upstream, "", 0)
	if err := cp.Register(ctx, []messages.Session{s}); err != nil {
		return sec, err
	}
	spawnerURL := cp.HTTPURL + "/p/" + s.ID + "/"
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = WaitHTTP(waitCtx, spawnerURL)
	cancel()
	if err != nil {
		return sec, err
	}
	ngx, err := StartNginx(ctx, env.Scratch("nginx"), upstream, "/p/"+s.ID)
	if err != nil {
		return sec, err
	}
	defer ngx.Stop(5 * time.Second)

	targets := []struct {
		name, url string
		pid       int
	}{{"direct", "http://" + upstream + "/", app.Pid()}, {"nginx", ngx.URL, ngx.Pid()}, {"spawner", spawnerURL, cp.Pid()}}
	d := pick(env, 10*time.Second, 3*time.Second)
	rounds := pick(env, 2, 1)
	for _, t := range targets { // warm up pools and caches
		if _, err := Wrk(ctx, t.url, 32, time.Second); err != nil {
			return sec, err
		}
	}
	// Rounds alternate the contenders so that drift in the machine's load
	// falls on all of them; each keeps its best round.
	best := map[string]WrkResult{}
	cpuPerReq := map[string]time.Duration{}
	for range rounds {
		for _, t := range targets {
			cpu0, _ := TreeCPUTime(t.pid)
			r, err := Wrk(ctx, t.url, 32, d)
			if err != nil {
				return sec, err
			}
			cpu1, _ := TreeCPUTime(t.pid)
			if n := r.RPS * d.Seconds(); n > 0 {
				perReq := time.Duration(float64(cpu1-cpu0) / n)
				if c, ok := cpuPerReq[t.name]; !ok || perReq < c {
					cpuPerReq[t.name] = perReq
				}
			}
			env.Log.Info("wrk", "target", t.name, "conns", 32, "rps", int(r.RPS), "p99", r.P99, "errors", r.Errors)
			if b, ok := best[t.name]; !ok || r.RPS > b.RPS {
				best[t.name] = r
			}
		}
	}
	single := map[string]WrkResult{}
	for _, t := range targets {
		r, err := Wrk(ctx, t.url, 1, pick(env, 5*time.Second, 2*time.Second))
		if err != nil {
			return sec, err
		}
		single[t.name] = r
		env.Log.Info("wrk", "target", t.name, "conns", 1, "rps", int(r.RPS), "p50", r.P50, "p99", r.P99)
	}
	sp, ng, di := best["spawner"], best["nginx"], best["direct"]
	sec.Rows = append(sec.Rows,
		Row{Metric: "HTTP req/s, wrk -t1 -c32 (vs nginx)", Spawner: fmt.Sprintf("%.0f", sp.RPS), Peer: fmt.Sprintf("%.0f", ng.RPS),
			Ratio: Ratio(sp.RPS, ng.RPS), Goal: "≥ 1.0× nginx", Met: Met(sp.RPS >= ng.RPS)},
		Row{Metric: "HTTP req/s, wrk -t1 -c32 (vs the app direct)", Spawner: fmt.Sprintf("%.0f", sp.RPS), Peer: fmt.Sprintf("%.0f", di.RPS),
			Ratio: Ratio(sp.RPS, di.RPS), Goal: "", Met: "—"},
		Row{Metric: "CPU per request, proxy process(es) only (app direct: " + Us(cpuPerReq["direct"]) + ")", Spawner: Us(cpuPerReq["spawner"]),
			Peer: Us(cpuPerReq["nginx"]), Ratio: Ratio(float64(cpuPerReq["spawner"]), float64(cpuPerReq["nginx"])), Met: "—"},
		Row{Metric: "p99 latency, 32 connections (app direct: " + Ms(di.P99) + ")", Spawner: Ms(sp.P99), Peer: Ms(ng.P99),
			Ratio: Ratio(float64(sp.P99), float64(ng.P99)), Goal: "≤ direct + 1 ms", Met: Met(sp.P99-di.P99 <= time.Millisecond)},
		Row{Metric: "p50 latency, 1 connection (app direct: " + Ms(single["direct"].P50) + ")", Spawner: Ms(single["spawner"].P50),
			Peer: Ms(single["nginx"].P50), Ratio: Ratio(float64(single["spawner"].P50), float64(single["nginx"].P50)), Met: "—"},
		Row{Metric: "p99 latency, 1 connection (app direct: " + Ms(single["direct"].P99) + ")", Spawner: Ms(single["spawner"].P99),
			Peer: Ms(single["nginx"].P99), Ratio: Ratio(float64(single["spawner"].P99), float64(single["nginx"].P99)),
			Goal: "≤ direct + 1 ms", Met: Met(single["spawner"].P99-single["direct"].P99 <= time.Millisecond)},
	)
	for _, name := range []string{"spawner", "nginx", "direct"} {
		if best[name].Errors > 0 {
			sec.Notes = append(sec.Notes, fmt.Sprintf("%s: %d errors under load.", name, best[name].Errors))
		}
	}
	sec.Notes = append(sec.Notes, fmt.Sprintf("wrk -t1 -c32 -d%s --latency, %d alternating rounds, best round of each; the app is a Go net/http JSON server in its own process; everything shares the machine's %d cores with wrk.",
		d, rounds, ThisMachine().Cores))
	sec.Notes = append(sec.Notes, "The gateway serves browsers with net/http and reaches apps over a pooled HTTP/1.1 client (api-gateway/fastproxy.go); upgrades such as WebSockets take the standard reverse proxy. CPU per request is read from /proc for the gateway process and for nginx's master and workers. To profile the proxy: go test -run '^$' -bench BenchmarkProxy -cpuprofile cpu.out ./api-gateway/.")

	wsN := pick(env, 2000, 300)
	viaProxy, err := wsEcho(ctx, "ws"+strings.TrimPrefix(spawnerURL, "http")+"ws", wsN)
	if err != nil {
		return sec, fmt.Errorf("websocket through the proxy: %w", err)
	}
	direct, err := wsEcho(ctx, "ws://"+upstream+"/ws", wsN)
	if err != nil {
		return sec, fmt.Errorf("websocket direct: %w", err)
	}
	over := viaProxy.Percentile(50) - direct.Percentile(50)
	sec.Rows = append(sec.Rows,
		Row{Metric: fmt.Sprintf("WebSocket echo round trip p50 (%d messages; peer: direct)", wsN), Spawner: Us(viaProxy.Percentile(50)) + " (" + signedUs(over) + ")",
			Peer: Us(direct.Percentile(50)), Ratio: Ratio(float64(viaProxy.Percentile(50)), float64(direct.Percentile(50))),
			Goal: "overhead ≤ 100 µs", Met: Met(over <= 100*time.Microsecond)},
		Row{Metric: "WebSocket echo round trip p99 (peer: direct)", Spawner: Us(viaProxy.Percentile(99)), Peer: Us(direct.Percentile(99)),
			Ratio: Ratio(float64(viaProxy.Percentile(99)), float64(direct.Percentile(99))), Met: "—"},
	)
	return sec, nil
}

func wsEcho(ctx context.Context, url string, n int) (Durations, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	defer c.CloseNow()
	msg := []byte(`{"type":"text","text":"hello","version":1}`)
	out := make(Durations, 0, n)
	for i := range n + 50 {
		start := time.Now()
		if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
			return nil, err
		}
		if _, _, err := c.Read(ctx); err != nil {
			return nil, err
		}
		if i >= 50 { // the first messages warm up both ends
			out = append(out, time.Since(start))
		}
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	return out, nil
}

func signedUs(d time.Duration) string {
	if d < 0 {
		return "−" + Us(-d)
	}
	return "+" + Us(d)
}
