package provisioner

import (
	"context"
	"errors"
	"time"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// The warm pool keeps ready sessions that no client holds yet, so /init can
// hand one out without waiting for an app to start. Each provisioner keeps
// its own pool, recorded in the registry as pooled sessions it owns.
//
// A pooled session was started before anyone asked for it, so it cannot
// carry a request's env or labels: a request with either is spawned fresh.
// A key, a request_id and the timeouts are applied when it is claimed.

// poolable reports whether req can be served from the pool.
func poolable(req messages.SpawnRequest) bool {
	return len(req.Env) == 0 && len(req.Labels) == 0
}

func (p *Provisioner) popPooled() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pool) == 0 {
		return "", false
	}
	id := p.pool[len(p.pool)-1]
	p.pool = p.pool[:len(p.pool)-1]
	return id, true
}

func (p *Provisioner) pushPooled(id string) {
	p.mu.Lock()
	p.pool = append(p.pool, id)
	p.mu.Unlock()
}

func (p *Provisioner) poolLen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pool) + p.poolFilling
}

// claim hands a pooled session to req. It reports false when the pool is
// empty or the popped session is gone, and the caller spawns fresh.
func (p *Provisioner) claim(ctx context.Context, id string, req messages.SpawnRequest) (messages.SpawnReply, bool) {
	defer p.refillSoon()
	entry, err := p.reg.Get(ctx, id)
	if err != nil || !entry.Session.Pooled || entry.Session.Status != messages.StatusReady {
		return messages.SpawnReply{}, false
	}
	s := entry.Session
	now := p.now().UTC()
	s.Pooled, s.ClaimedAt, s.CreatedAt = false, now, now
	s.Key, s.RequestID = req.Key, req.RequestID
	s.IdleTimeoutSeconds = seconds(req.IdleTimeoutSeconds, p.cfg.IdleTimeout)
	s.MaxLifetimeSeconds = seconds(req.MaxLifetimeSeconds, p.cfg.MaxLifetime)
	// The compare-and-swap is what makes a claim happen at most once, even
	// if two replicas ever held the same id.
	if _, err := p.reg.Update(ctx, s, entry.Revision); err != nil {
		return messages.SpawnReply{}, false
	}
	p.emit(messages.Event{Type: messages.EventReady, SessionID: id, RequestID: req.RequestID, Key: req.Key,
		URL: s.URL, Upstream: s.Upstream, Backend: s.Backend, Owner: s.Owner, Labels: s.Labels})
	return messages.SpawnReply{SessionID: id, URL: s.URL, Status: s.Status, Created: true, Key: req.Key}, true
}

// fromPool serves req from the pool when it can. With a key it binds the
// key to the pooled session first, so key races behave as for a spawn.
func (p *Provisioner) fromPool(ctx context.Context, req messages.SpawnRequest) (messages.SpawnReply, bool, error) {
	if p.cfg.WarmPool <= 0 || !poolable(req) {
		return messages.SpawnReply{}, false, nil
	}
	id, ok := p.popPooled()
	if !ok {
		p.refillSoon()
		return messages.SpawnReply{}, false, nil
	}
	if req.Key != "" {
		bound, err := p.reg.ClaimKey(ctx, req.Key, id)
		if err != nil {
			p.pushPooled(id)
			if errors.Is(err, registry.ErrExists) {
				rep, ok, err := p.existing(ctx, req.Key, bound)
				return rep, ok, err
			}
			return messages.SpawnReply{}, false, nil
		}
	}
	rep, ok := p.claim(ctx, id, req)
	if !ok && req.Key != "" {
		_ = p.reg.ReleaseKey(ctx, req.Key, id)
	}
	return rep, ok, nil
}

func (p *Provisioner) refillSoon() {
	select {
	case p.refill <- struct{}{}:
	default:
	}
}

// fillPool keeps the pool at its size until ctx ends.
func (p *Provisioner) fillPool(ctx context.Context) {
	if p.cfg.WarmPool <= 0 {
		return
	}
	p.adoptPooled(ctx)
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		for p.poolLen() < p.cfg.WarmPool && ctx.Err() == nil {
			id := messages.NewSessionID()
			if err := p.checkCapacity(ctx, id); err != nil {
				break
			}
			p.mu.Lock()
			p.poolFilling++
			p.mu.Unlock()
			_, err := p.create(ctx, id, messages.SpawnRequest{}, true)
			p.mu.Lock()
			p.poolFilling--
			p.mu.Unlock()
			if err != nil {
				p.log.Warn("warm pool spawn failed", "err", err)
				break
			}
			p.pushPooled(id)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.refill:
		case <-t.C:
		}
	}
}

// adoptPooled takes back this provisioner's pooled sessions after a
// restart, on backends whose sessions outlive it.
func (p *Provisioner) adoptPooled(ctx context.Context) {
	entries, err := p.reg.List(ctx)
	if err != nil {
		return
	}
	for _, e := range entries {
		s := e.Session
		if s.Pooled && s.Owner == p.cfg.Name && s.Status == messages.StatusReady && s.Backend == p.cfg.Backend {
			p.pushPooled(s.ID)
		}
	}
}
