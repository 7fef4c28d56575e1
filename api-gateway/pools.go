package gateway

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/messages"
)

// Each pool's registry stays in that pool, so no gateway holds every
// session. A hub lists them by asking: it sends one request on
// "<prefix>.control.sessions", naming a pool or "*" for all, and every
// gateway of a named pool answers with its own pool's sessions from its
// cache. Replicas of one pool give the same answer; the first one counts.

// allPools is the value of ?pool= and of a list request that asks for
// every pool.
const allPools = "*"

// answerSessionLists serves the session list requests of other gateways
// until the subscription ends.
func (g *Gateway) answerSessionLists() (*nats.Subscription, error) {
	return g.nc.Subscribe(g.subj.SessionLists(), func(m *nats.Msg) {
		want := string(m.Data)
		if want != allPools && want != g.cfg.Pool {
			return
		}
		out := messages.PoolSessions{Pool: g.cfg.Pool, Gateway: g.name}
		if g.cache.IsSynced() {
			out.Sessions = g.appendSessions(nil, g.list.snapshot())
		} else {
			out.Error = messages.Errorf(messages.CodeUnavailable, "session registry of pool %q not loaded yet", g.cfg.Pool)
		}
		data, err := json.Marshal(out)
		if err != nil {
			return
		}
		_ = m.Respond(data)
	})
}

// listPools answers GET /sessions for other pools than this gateway's own:
// pool is one pool's name or allPools.
func (g *Gateway) listPools(w http.ResponseWriter, r *http.Request, pool string) {
	var views []messages.SessionView
	var pools []string
	var failed []*messages.Error
	err := g.gather(r.Context(), g.subj.SessionLists(), []byte(pool), g.cfg.PoolWait, func(data []byte) bool {
		var ps messages.PoolSessions
		if json.Unmarshal(data, &ps) != nil || slices.Contains(pools, ps.Pool) {
			return false
		}
		if ps.Error != nil {
			failed = append(failed, ps.Error)
			return false
		}
		var got []messages.SessionView
		if json.Unmarshal(ps.Sessions, &got) != nil {
			return false
		}
		pools = append(pools, ps.Pool)
		views = append(views, got...)
		// One pool has one answer; there is nothing more to wait for.
		return pool != allPools
	})
	switch {
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "list pools: %v", err))
		return
	case pool != allPools && len(pools) == 0 && len(failed) > 0:
		writeError(w, http.StatusServiceUnavailable, failed[0])
		return
	case pool != allPools && len(pools) == 0:
		writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable,
			"no gateway of pool %q answered within %s", pool, g.cfg.PoolWait))
		return
	}
	slices.SortFunc(views, func(a, b messages.SessionView) int { return a.CreatedAt.Compare(b.CreatedAt) })
	slices.Sort(pools)
	if views == nil {
		views = []messages.SessionView{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": views, "count": len(views), "pools": pools})
}

// listScope reads ?pool=: the pool GET /sessions lists, allPools, or
// local for this gateway's own registry.
func (g *Gateway) listScope(r *http.Request) (pool string, local bool, e *messages.Error) {
	q := r.URL.Query()
	if !q.Has("pool") {
		if g.cfg.Hub {
			return allPools, false, nil
		}
		return g.cfg.Pool, true, nil
	}
	pool = q.Get("pool")
	if pool == allPools {
		return pool, false, nil
	}
	if err := messages.ValidPool(pool); err != nil {
		return "", false, messages.Errorf(messages.CodeBadRequest, "pool: %q is not a pool name, nor * for every pool", pool)
	}
	return pool, pool == g.cfg.Pool, nil
}
