package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// wsMessage is what every WebSocket measurement sends and reads back.
var wsMessage = []byte(`{"type":"text","text":"hello","version":1}`)

// wsConns is how many connections the throughput measurement keeps busy
// at once, enough that no contender waits on one round trip at a time.
const wsConns = 16

// proxyWebSocket measures WebSocket echoes to benchupstream's /ws at the
// URLs keyed "direct", "nginx" and "spawner": round trips per second over
// wsConns connections, in alternating rounds with each contender's best
// kept, then one connection's round-trip latency through the proxy and
// direct.
func proxyWebSocket(ctx context.Context, env *Env, urls map[string]string, rounds int) ([]Row, []string, error) {
	names := []string{"direct", "nginx", "spawner"}
	d := pick(env, 5*time.Second, 2*time.Second)
	for _, name := range names { // each path works, and its pools are warm
		if _, err := wsThroughput(ctx, urls[name], wsConns, 200*time.Millisecond); err != nil {
			return nil, nil, fmt.Errorf("websocket via %s: %w", name, err)
		}
	}
	best := map[string]float64{}
	for range rounds {
		for _, name := range names {
			rate, err := wsThroughput(ctx, urls[name], wsConns, d)
			if err != nil {
				return nil, nil, fmt.Errorf("websocket via %s: %w", name, err)
			}
			env.Log.Info("websocket", "target", name, "conns", wsConns, "round_trips_per_sec", int(rate))
			best[name] = max(best[name], rate)
		}
	}
	wsN := pick(env, 2000, 300)
	viaProxy, err := wsEcho(ctx, urls["spawner"], wsN)
	if err != nil {
		return nil, nil, fmt.Errorf("websocket through the proxy: %w", err)
	}
	direct, err := wsEcho(ctx, urls["direct"], wsN)
	if err != nil {
		return nil, nil, fmt.Errorf("websocket direct: %w", err)
	}
	over := viaProxy.Percentile(50) - direct.Percentile(50)
	rows := []Row{
		{Metric: fmt.Sprintf("WebSocket echo round trips/s, %d connections (app direct: %.0f)", wsConns, best["direct"]),
			Spawner: fmt.Sprintf("%.0f", best["spawner"]), Peer: fmt.Sprintf("%.0f", best["nginx"]),
			Ratio: Ratio(best["spawner"], best["nginx"]), Goal: "≥ 1.0× nginx", Met: Met(best["spawner"] > 0 && best["spawner"] >= best["nginx"])},
		{Metric: fmt.Sprintf("WebSocket echo round trip p50, 1 connection (%d messages; peer: direct)", wsN), Spawner: Us(viaProxy.Percentile(50)) + " (" + signedUs(over) + ")",
			Peer: Us(direct.Percentile(50)), Ratio: Ratio(float64(viaProxy.Percentile(50)), float64(direct.Percentile(50))),
			Goal: "overhead ≤ 100 µs", Met: Met(over <= 100*time.Microsecond)},
		{Metric: "WebSocket echo round trip p99, 1 connection (peer: direct)", Spawner: Us(viaProxy.Percentile(99)), Peer: Us(direct.Percentile(99)),
			Ratio: Ratio(float64(viaProxy.Percentile(99)), float64(direct.Percentile(99))), Met: "—"},
	}
	notes := []string{fmt.Sprintf("WebSockets: the app echoes each message (%d bytes of text) at /ws; nginx proxies the upgrade on the same location as the HTTP rows (Upgrade and Connection set from the request through a map, so plain requests keep their keepalive upstream). "+
		"Round trips/s: %d connections, each writing one message and reading its echo before the next, for %s; every echo read counts once, divided by the time until the last connection stopped; rounds: %d, each running direct, nginx and Spawner in turn; best round of each. "+
		"The round-trip rows time %d echoes on one connection after 50 unmeasured ones. The client is Go (github.com/coder/websocket) in the benchmark's own process.",
		len(wsMessage), wsConns, d, rounds, wsN)}
	return rows, notes, nil
}

// wsThroughput keeps conns connections to url busy with echo round trips
// for d and returns the round trips completed per second.
func wsThroughput(ctx context.Context, url string, conns int, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	cs := make([]*websocket.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.CloseNow()
		}
	}()
	for range conns { // dialled before the clock starts: upgrades are not timed
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			return 0, err
		}
		cs = append(cs, c)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		first error
	)
	start := time.Now()
	deadline := start.Add(d)
	for _, c := range cs {
		wg.Go(func() {
			n, err := 0, error(nil)
			for time.Now().Before(deadline) {
				if err = c.Write(ctx, websocket.MessageText, wsMessage); err != nil {
					break
				}
				if _, _, err = c.Read(ctx); err != nil {
					break
				}
				n++
			}
			mu.Lock()
			total += n
			if first == nil {
				first = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return 0, first
	}
	for _, c := range cs {
		_ = c.Close(websocket.StatusNormalClosure, "")
	}
	return float64(total) / elapsed.Seconds(), nil
}

func wsEcho(ctx context.Context, url string, n int) (Durations, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	defer c.CloseNow()
	out := make(Durations, 0, n)
	for i := range n + 50 {
		start := time.Now()
		if err := c.Write(ctx, websocket.MessageText, wsMessage); err != nil {
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
