package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type errorBody struct {
	Error *messages.Error `json:"error"`
}

func writeError(w http.ResponseWriter, status int, e *messages.Error) {
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, status, errorBody{Error: e})
}

// httpStatus maps a reply's error code onto the HTTP status a client expects.
func httpStatus(code messages.ErrorCode) int {
	switch code {
	case messages.CodeBadRequest:
		return http.StatusBadRequest
	case messages.CodeUnauthorized:
		return http.StatusUnauthorized
	case messages.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case messages.CodeNotFound:
		return http.StatusNotFound
	case messages.CodeTooMany:
		return http.StatusTooManyRequests
	case messages.CodeUnavailable:
		return http.StatusServiceUnavailable
	case messages.CodeTimeout:
		return http.StatusGatewayTimeout
	case messages.CodeSpawnFailed:
		return http.StatusBadGateway
	default:
		return http.StatusInternalServerError
	}
}

func (g *Gateway) handleInit(w http.ResponseWriter, r *http.Request) {
	body, err := g.readBody(w, r)
	var tooBig *http.MaxBytesError
	if isTimeout(err) {
		writeError(w, http.StatusRequestTimeout, messages.Errorf(messages.CodeBadRequest, "the request body did not arrive within %s", g.cfg.APIBodyTimeout))
		return
	}
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, messages.Errorf(messages.CodeTooLarge, "request body is over %d bytes", messages.MaxRequestBytes))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, messages.Errorf(messages.CodeBadRequest, "read body: %v", err))
		return
	}
	req, err := messages.DecodeSpawnRequest(body)
	if err != nil {
		e := err.(*messages.Error)
		writeError(w, httpStatus(e.Code), e)
		return
	}
	if e := g.checkApp(req); e != nil {
		writeError(w, httpStatus(e.Code), e)
		return
	}
	rep, e := g.spawn(r.Context(), req)
	if e != nil {
		writeError(w, httpStatus(e.Code), e)
		return
	}
	if rep.Pool == g.cfg.Pool { // Another pool's sessions are in its own registry.
		g.awaitCopy(r.Context(), rep.SessionID, func(s messages.Session, ok bool) bool {
			return ok && (s.Status != messages.StatusCreating || rep.Status == messages.StatusCreating)
		})
	}
	status := http.StatusOK
	if rep.Created {
		status = http.StatusCreated
	}
	writeJSON(w, status, rep)
}

// awaitCopy waits, for a second at most, until the gateway's copy of the
// registry shows what a provisioner has just answered, so that a client
// reads its own writes: GET /sessions right after POST /init lists the
// session as the answer gave it, and not at all right after DELETE. The
// provisioner wrote the record before it answered, so the wait is the
// watch's delivery (under a millisecond); the bound covers a record that
// ended meanwhile, or a copy that is being rebuilt.
func (g *Gateway) awaitCopy(ctx context.Context, id string, cond func(messages.Session, bool) bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	g.cache.Await(ctx, id, cond)
}

// spawn encodes nothing itself: spawnPlaced picks the pools to try, and
// spawnOn sends the request to one of them.
func (g *Gateway) spawn(ctx context.Context, req messages.SpawnRequest) (messages.SpawnReply, *messages.Error) {
	return g.spawnPlaced(ctx, req)
}

// spawnOn sends the request to the provisioners of one target and waits a
// little longer than their spawn timeout, so their own timeout answer
// arrives first. none reports that the target has no provisioner.
func (g *Gateway) spawnOn(ctx context.Context, t target, req messages.SpawnRequest) (rep messages.SpawnReply, e *messages.Error, none bool) {
	data, err := json.Marshal(req)
	if err != nil {
		return rep, messages.Errorf(messages.CodeInternal, "encode request: %v", err), false
	}
	if !g.provisionersPresent(ctx, t.ping) {
		return rep, nil, true
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SpawnTimeout+5*time.Second)
	defer cancel()
	msg, err := g.nc.RequestWithContext(ctx, t.request, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return rep, nil, true
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return rep, messages.Errorf(messages.CodeTimeout, "no answer from a provisioner%s within %s", inPool(t.pool), g.cfg.SpawnTimeout+5*time.Second), false
	case err != nil:
		return rep, messages.Errorf(messages.CodeUnavailable, "spawn request%s: %v", inPool(t.pool), err), false
	}
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return rep, messages.Errorf(messages.CodeInternal, "undecodable reply: %v", err), false
	}
	if rep.Error != nil {
		return messages.SpawnReply{}, rep.Error, false
	}
	return rep, nil, false
}

func inPool(pool string) string {
	if pool == "" {
		return ""
	}
	return fmt.Sprintf(" of pool %q", pool)
}

// provisionersPresent reports false at once when no provisioner answers
// the ping subject. A success is remembered for a second per subject, so
// a burst of spawns pings once.
func (g *Gateway) provisionersPresent(ctx context.Context, ping string) bool {
	if at, ok := g.provisionerSeen.Load(ping); ok && time.Since(at.(time.Time)) < time.Second {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := g.nc.RequestWithContext(ctx, ping, nil)
	switch {
	case err == nil:
		g.provisionerSeen.Store(ping, time.Now())
		return true
	case errors.Is(err, nats.ErrNoResponders):
		return false
	default:
		// A slow answer is no proof of absence; let the spawn itself decide.
		return true
	}
}

// view is s as the API shows it, with its newest heartbeat.
func (g *Gateway) view(s messages.Session) messages.SessionView {
	v := messages.SessionView{Session: s}
	if hb, ok := g.beats.get(s.ID); ok {
		t := hb.Time
		v.Probed, v.LastProbe = true, &t
		if hb.OK {
			n, idle := hb.ActiveConnections, hb.SecondsInactive
			last := hb.Time.Add(-time.Duration(idle) * time.Second)
			v.ActiveConnections, v.SecondsInactive, v.LastActivity = &n, &idle, &last
		} else {
			e := hb.Error
			v.ProbeError = &e
		}
	}
	return v
}

// handleList answers from the registry cache: a scan of the bucket per
// request cost in proportion to every session, and the dashboard asks
// after each event. Until the cache has synced (at start, after a NATS
// outage, or for a Handler embedded without Serve) it scans as before.
func (g *Gateway) handleList(w http.ResponseWriter, r *http.Request) {
	pool, local, e := g.listScope(r)
	if e != nil {
		writeError(w, http.StatusBadRequest, e)
		return
	}
	if !local {
		g.listPools(w, r, pool)
		return
	}
	if g.cache.IsSynced() {
		g.writeSessionList(w)
		return
	}
	entries, err := g.reg.List(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "%v", err))
		return
	}
	out := make([]messages.SessionView, 0, len(entries))
	for _, e := range entries {
		out = append(out, g.view(e.Session))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	writeJSON(w, http.StatusOK, map[string]any{"sessions": out, "count": len(out)})
}

func (g *Gateway) handleGet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s, ok := g.cache.Get(id)
	if !ok {
		// The reply to /init can reach a client before the watch reaches
		// the cache; one registry read closes that gap.
		entry, err := g.reg.Get(r.Context(), id)
		if errors.Is(err, registry.ErrNotFound) {
			writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no live session %q", id))
			return
		}
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "%v", err))
			return
		}
		s = entry.Session
	}
	writeJSON(w, http.StatusOK, g.view(s))
}

func (g *Gateway) handleDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !messages.ValidSessionID(id) {
		writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no live session %q", id))
		return
	}
	data, _ := json.Marshal(messages.StopRequest{SessionID: id, Reason: messages.ReasonDeleted, Detail: "deleted through the API"})
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	msg, err := g.nc.RequestWithContext(ctx, g.subj.Stop(), data)
	if errors.Is(err, nats.ErrNoResponders) {
		writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "no provisioner is running"))
		return
	}
	if err != nil {
		writeError(w, http.StatusGatewayTimeout, messages.Errorf(messages.CodeTimeout, "stop request: %v", err))
		return
	}
	var rep messages.StopReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		writeError(w, http.StatusInternalServerError, messages.Errorf(messages.CodeInternal, "undecodable reply: %v", err))
		return
	}
	switch {
	case rep.Error != nil:
		writeError(w, httpStatus(rep.Error.Code), rep.Error)
	case !rep.Found:
		writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no live session %q", id))
	default:
		g.routes.remove(id)
		g.awaitCopy(r.Context(), id, func(_ messages.Session, ok bool) bool { return !ok })
		writeJSON(w, http.StatusOK, map[string]string{"session_id": id, "status": string(messages.StatusTerminated)})
	}
}

// heartbeatCache keeps the newest heartbeat of each session for the API.
type heartbeatCache struct {
	mu    sync.Mutex
	beats map[string]messages.Heartbeat
}

func newHeartbeatCache() *heartbeatCache {
	return &heartbeatCache{beats: map[string]messages.Heartbeat{}}
}

func (c *heartbeatCache) record(msg *nats.Msg) {
	hb, err := messages.DecodeHeartbeat(msg.Data)
	if err != nil {
		return
	}
	c.mu.Lock()
	c.beats[hb.SessionID] = hb
	c.mu.Unlock()
}

func (c *heartbeatCache) get(id string) (messages.Heartbeat, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hb, ok := c.beats[id]
	return hb, ok
}

func (c *heartbeatCache) forget(id string) {
	c.mu.Lock()
	delete(c.beats, id)
	c.mu.Unlock()
}
