package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

func (p *Provisioner) handleSpawn(ctx context.Context, msg *nats.Msg) {
	req, err := messages.DecodeSpawnRequest(msg.Data)
	if err != nil {
		reply(msg, messages.SpawnReply{Error: asError(err)})
		return
	}
	rep, err := p.Spawn(ctx, req)
	if err != nil {
		rep = messages.SpawnReply{Error: asError(err)}
	} else {
		rep.Pool = p.cfg.Pool
	}
	reply(msg, p.withToken(rep))
}

func asError(err error) *messages.Error {
	var e *messages.Error
	if errors.As(err, &e) {
		return e
	}
	return &messages.Error{Code: messages.CodeInternal, Message: err.Error()}
}

// Spawn creates a session, or returns the live session bound to req.Key.
func (p *Provisioner) Spawn(ctx context.Context, req messages.SpawnRequest) (messages.SpawnReply, error) {
	if err := req.Validate(); err != nil {
		return messages.SpawnReply{}, err
	}
	if err := p.placeable(req); err != nil {
		return messages.SpawnReply{}, err
	}
	app, err := p.resolve(req)
	if err != nil {
		return messages.SpawnReply{}, err
	}
	if rep, ok, err := p.fromPool(ctx, req, app); ok || err != nil {
		return rep, err
	}
	id := messages.NewSessionID()
	if req.Key != "" {
		for attempt := 0; ; attempt++ {
			bound, err := p.reg.ClaimKey(ctx, req.Key, id)
			if err == nil {
				break
			}
			if !errors.Is(err, registry.ErrExists) || attempt == 3 {
				p.mx.SpawnFailed(metrics.FailRegistry, 0)
				return messages.SpawnReply{}, messages.Errorf(messages.CodeUnavailable, "claim key: %v", err)
			}
			rep, ok, err := p.existing(ctx, req.Key, bound)
			if err != nil || ok {
				return rep, err
			}
		}
	}
	if err := p.checkCapacity(ctx, id); err != nil {
		p.mx.SpawnFailed(metrics.FailCapacity, 0)
		_ = p.reg.ReleaseKey(ctx, req.Key, id)
		return messages.SpawnReply{}, err
	}
	return p.create(ctx, id, req, app, false)
}

// existing answers with the session already bound to key. It reports false
// when the binding is stale (the session ended), after releasing it.
func (p *Provisioner) existing(ctx context.Context, key, id string) (messages.SpawnReply, bool, error) {
	waitCtx, cancel := context.WithTimeout(ctx, p.cfg.SpawnTimeout+5*time.Second)
	defer cancel()
	s, err := p.reg.Await(waitCtx, id)
	if errors.Is(err, registry.ErrNotFound) && p.appears(waitCtx, id) {
		s, err = p.reg.Await(waitCtx, id)
	}
	if errors.Is(err, registry.ErrNotFound) {
		return messages.SpawnReply{}, false, p.reg.ReleaseKey(ctx, key, id)
	}
	if err != nil {
		return messages.SpawnReply{}, false, messages.Errorf(messages.CodeTimeout, "wait for session %s: %v", id, err)
	}
	if s.Status != messages.StatusReady {
		// Stopping: the key frees up once it is gone, so wait for that.
		return messages.SpawnReply{}, false, p.awaitGone(waitCtx, key, id)
	}
	return messages.SpawnReply{SessionID: s.ID, URL: s.URL, Status: s.Status, Key: key}, true, nil
}

// keyGrace is how long a key may be bound to a session with no record
// before the binding counts as stale. The spawn that wins a key writes the
// record just after claiming it, so a racing spawn can see the claim first.
const keyGrace = 5 * time.Second

// appears reports whether the record of id shows up within keyGrace.
func (p *Provisioner) appears(ctx context.Context, id string) bool {
	deadline := time.Now().Add(keyGrace)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := p.reg.Get(ctx, id); err == nil {
			return true
		}
	}
	return false
}

func (p *Provisioner) awaitGone(ctx context.Context, key, id string) error {
	for {
		if _, err := p.reg.Get(ctx, id); errors.Is(err, registry.ErrNotFound) {
			return p.reg.ReleaseKey(ctx, key, id)
		}
		select {
		case <-ctx.Done():
			return messages.Errorf(messages.CodeTimeout, "session %s with this key is still stopping", id)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkCapacity reserves one of MaxSessions slots for the session id. The
// reservation is atomic in the registry, so concurrent spawns on any number
// of provisioners never exceed the limit; every path that ends the session
// (rollback, stop, reconcile) releases it.
func (p *Provisioner) checkCapacity(ctx context.Context, id string) error {
	if p.cfg.MaxSessions <= 0 {
		return nil
	}
	err := p.reg.Reserve(ctx, id, p.cfg.MaxSessions)
	if errors.Is(err, registry.ErrFull) {
		return messages.Errorf(messages.CodeTooMany, "the limit of %d live sessions is reached", p.cfg.MaxSessions)
	}
	if err != nil {
		return messages.Errorf(messages.CodeUnavailable, "reserve capacity: %v", err)
	}
	return nil
}

// release frees the session's capacity slot; it is a no-op for a session
// that holds none.
func (p *Provisioner) release(ctx context.Context, id string) {
	if p.cfg.MaxSessions <= 0 {
		return
	}
	if err := p.reg.Release(ctx, id); err != nil {
		// Reconcile frees the slot once the record is gone.
		p.log.Error("release capacity", "session_id", id, "err", err)
	}
}

func (p *Provisioner) sessionURL(id string) string {
	return p.routing.SessionURL(p.publicURL, p.cfg.SessionDomain, id)
}

func (p *Provisioner) create(ctx context.Context, id string, req messages.SpawnRequest, app catalog.App, pooled bool) (messages.SpawnReply, error) {
	start := p.now()
	p.track(id, true)
	defer p.track(id, false)
	spec := p.spec(id, p.sessionURL(id), req, app)
	s := messages.Session{
		ID: id, App: app.Name, Routing: messages.Routing(app.Routing), Key: req.Key, RequestID: req.RequestID, Status: messages.StatusCreating,
		URL: spec.URL, Labels: spec.Labels, Backend: p.cfg.Backend, Pool: p.cfg.Pool, Owner: p.name,
		IdleTimeoutSeconds: seconds(req.IdleTimeoutSeconds, p.idleTimeout(app)),
		MaxLifetimeSeconds: seconds(req.MaxLifetimeSeconds, p.maxLifetime(app)),
		CreatedAt:          start.UTC(),
		Pooled:             pooled,
	}
	rev, err := p.reg.Create(ctx, s)
	if err != nil {
		p.mx.SpawnFailed(metrics.FailRegistry, 0)
		_ = p.reg.ReleaseKey(ctx, req.Key, id)
		p.release(ctx, id)
		return messages.SpawnReply{}, messages.Errorf(messages.CodeUnavailable, "%v", err)
	}
	log := p.log.With("session_id", id)
	p.emit(messages.Event{Type: messages.EventCreating, SessionID: id, App: s.App, RequestID: req.RequestID, Key: req.Key,
		URL: s.URL, Backend: s.Backend, Owner: s.Owner, Labels: s.Labels})

	startCtx, cancel := context.WithTimeout(ctx, p.cfg.SpawnTimeout)
	inst, err := p.backend.Start(startCtx, spec)
	timedOut := startCtx.Err() != nil
	cancel()
	if err != nil {
		if timedOut {
			err = fmt.Errorf("not ready within the spawn timeout of %s: %w", p.cfg.SpawnTimeout, err)
		}
		log.Warn("spawn failed", "err", err)
		p.rollback(ctx, s, rev, err, start)
		code, failure := messages.CodeSpawnFailed, metrics.FailBackend
		var backendErr *messages.Error
		if timedOut {
			code, failure = messages.CodeTimeout, metrics.FailTimeout
		} else if errors.As(err, &backendErr) && backendErr.Code == messages.CodeUnavailable {
			// The backend could not be reached (an API server down): a 503
			// the client may retry, not a failure of this spawn's app.
			code = messages.CodeUnavailable
		}
		p.mx.SpawnFailed(failure, p.now().Sub(start))
		// The backend's error says what the app did; only this names the session.
		return messages.SpawnReply{}, messages.Errorf(code, "session %s did not start: %v", id, err)
	}
	s.Status, s.Upstream, s.StatusURL, s.ReadyAt = messages.StatusReady, inst.Upstream, inst.StatusURL, p.now().UTC()
	s.ProxyActivity = inst.ProxyActivity
	if _, err := p.reg.Update(ctx, s, rev); err != nil {
		// A stop arrived while we were starting; it wins.
		err = fmt.Errorf("stopped while starting: %w", err)
		log.Info("spawn cancelled", "err", err)
		p.mx.SpawnFailed(metrics.FailCancelled, p.now().Sub(start))
		p.rollback(ctx, s, 0, err, start)
		return messages.SpawnReply{}, messages.Errorf(messages.CodeSpawnFailed, "session %s: %v", id, err)
	}
	took := p.now().Sub(start)
	log.Info("session ready", "upstream", inst.Upstream, "took", took)
	p.mx.SpawnReady(took)
	p.emit(messages.Event{Type: messages.EventReady, SessionID: id, App: s.App, RequestID: req.RequestID, Key: req.Key,
		URL: s.URL, Upstream: s.Upstream, Backend: s.Backend, Owner: s.Owner, Labels: s.Labels,
		SpawnSeconds: took.Seconds()})
	return messages.SpawnReply{SessionID: id, URL: s.URL, Status: s.Status, Created: true, Key: req.Key}, nil
}

// rollback undoes a failed spawn: the instance, the record and the key.
func (p *Provisioner) rollback(ctx context.Context, s messages.Session, rev uint64, cause error, start time.Time) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.backend.Stop(ctx, s.ID); err != nil {
		// The record stays, so reconciliation retries the stop.
		p.log.Error("roll back instance", "session_id", s.ID, "err", err)
		return
	}
	// As in finishStop: the event is stored before the record goes, and
	// when it cannot be, the record stays for reconcile to end.
	if err := p.reg.ReleaseKey(ctx, s.Key, s.ID); err != nil {
		p.log.Error("roll back key", "session_id", s.ID, "err", err)
	}
	if err := p.emitStored(ctx, messages.Event{Type: messages.EventFailed, SessionID: s.ID, App: s.App, RequestID: s.RequestID, Key: s.Key,
		Backend: s.Backend, Owner: s.Owner, Labels: s.Labels, Reason: messages.ReasonFailed,
		Error: cause.Error(), SpawnSeconds: p.now().Sub(start).Seconds()}); err != nil {
		p.log.Error("roll back", "session_id", s.ID, "err", err)
		return
	}
	if err := p.reg.Delete(ctx, s.ID, rev); err != nil {
		p.log.Error("roll back record", "session_id", s.ID, "err", err)
	}
	p.release(ctx, s.ID)
}

func seconds(requested int64, fallback time.Duration) int64 {
	if requested > 0 {
		return requested
	}
	return int64(fallback / time.Second)
}
