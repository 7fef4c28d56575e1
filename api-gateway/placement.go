package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// Placement is a thin layer on the bus, not a scheduler. A request that
// names a pool goes to that pool's subject; one with a placement goes to
// the nearest pool whose labels match, nearest being the first to answer
// the pool directory; one that names neither goes to the subject every
// pool shares, where NATS prefers a provisioner on the requester's own
// server or cluster. A pool with no provisioner answers "no responders" at
// once, which becomes a 503 naming it, or a try of the next pool on the
// operator's fallback list.

// poolDirectoryTTL is how long the answers of the pool directory are
// reused: placement by label asks it at most this often.
const poolDirectoryTTL = 2 * time.Second

// poolDirectory caches the answers on "<prefix>.control.pools".
type poolDirectory struct {
	mu    sync.Mutex
	at    time.Time
	pools []messages.PoolInfo
}

// target is one pool a spawn may go to, with its subjects.
type target struct {
	pool    string
	request string
	ping    string
}

// targets lists where req may go, in the order to try them.
func (g *Gateway) targets(ctx context.Context, req messages.SpawnRequest) ([]target, *messages.Error) {
	if req.Pool == "" && len(req.Placement) == 0 {
		return []target{{request: g.subj.AnyRequested(), ping: g.subj.AnyPing()}}, nil
	}
	var names []string
	if req.Pool != "" {
		names = append([]string{req.Pool}, g.fallback...)
	} else {
		pools, err := g.pools(ctx)
		if err != nil {
			return nil, messages.Errorf(messages.CodeUnavailable, "pool directory: %v", err)
		}
		for _, p := range pools {
			if p.Matches(req.Placement) {
				names = append(names, p.Pool)
			}
		}
		if len(names) == 0 {
			return nil, messages.Errorf(messages.CodeUnavailable, "no pool with a running provisioner matches placement %s", describeLabels(req.Placement))
		}
	}
	var out []target
	for _, name := range names {
		if slices.ContainsFunc(out, func(t target) bool { return t.pool == name }) {
			continue
		}
		s := g.subj.ForPool(name)
		out = append(out, target{pool: name, request: s.Requested(), ping: s.Ping()})
	}
	return out, nil
}

// pools returns the pools whose provisioners answered the directory, in
// the order their first answer came: nearest first.
func (g *Gateway) pools(ctx context.Context) ([]messages.PoolInfo, error) {
	d := &g.directory
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Since(d.at) < poolDirectoryTTL && d.pools != nil {
		return d.pools, nil
	}
	var pools []messages.PoolInfo
	err := g.gather(ctx, g.subj.Pools(), nil, g.cfg.PoolWait, func(data []byte) bool {
		var p messages.PoolInfo
		if json.Unmarshal(data, &p) == nil && messages.ValidPool(p.Pool) == nil &&
			!slices.ContainsFunc(pools, func(q messages.PoolInfo) bool { return q.Pool == p.Pool }) {
			pools = append(pools, p)
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	d.pools, d.at = pools, time.Now()
	return pools, nil
}

// gather sends one request that many may answer and hands each answer to
// take until wait has passed or take returns true.
func (g *Gateway) gather(ctx context.Context, subject string, data []byte, wait time.Duration, take func([]byte) bool) error {
	inbox := g.nc.NewRespInbox()
	sub, err := g.nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", inbox, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := g.nc.PublishRequest(subject, inbox, data); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			// The window closing is how a gathering ends.
			return nil
		}
		if len(msg.Data) == 0 && msg.Header.Get("Status") == "503" {
			return nil // No one answers at all.
		}
		if take(msg.Data) {
			return nil
		}
	}
}

// spawnPlaced tries each target in turn: a pool with no provisioner is
// skipped at once, and the first one that takes the request answers.
func (g *Gateway) spawnPlaced(ctx context.Context, req messages.SpawnRequest) (messages.SpawnReply, *messages.Error) {
	targets, e := g.targets(ctx, req)
	if e != nil {
		return messages.SpawnReply{}, e
	}
	var absent []string
	for _, t := range targets {
		// A fallback pool is named in the request it gets, so that its
		// provisioner accepts it; a placement stays, for the provisioner
		// to check against its own labels.
		if t.pool != "" && len(req.Placement) == 0 {
			req.Pool = t.pool
		}
		rep, e, none := g.spawnOn(ctx, t, req)
		if none {
			absent = append(absent, t.pool)
			continue
		}
		return rep, e
	}
	return messages.SpawnReply{}, noProvisioner(absent, req.Placement)
}

// noProvisioner is the 503 for pools that had no provisioner.
func noProvisioner(pools []string, placement map[string]string) *messages.Error {
	switch {
	case len(pools) == 1 && pools[0] == "":
		return messages.Errorf(messages.CodeUnavailable, "no provisioner is running")
	case len(pools) == 1:
		return messages.Errorf(messages.CodeUnavailable, "no provisioner of pool %q is running", pools[0])
	case len(placement) > 0:
		return messages.Errorf(messages.CodeUnavailable, "no provisioner is running in the pools that match placement %s: %s",
			describeLabels(placement), quoteList(pools))
	default:
		return messages.Errorf(messages.CodeUnavailable, "no provisioner of pool %q is running, nor of its fallback pools %s",
			pools[0], quoteList(pools[1:]))
	}
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

func describeLabels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return "{" + strings.Join(keys, ",") + "}"
}

// parseFallback reads SPAWNER_POOL_FALLBACK.
func parseFallback(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if err := messages.ValidPool(p); err != nil {
			return nil, fmt.Errorf("SPAWNER_POOL_FALLBACK: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}
