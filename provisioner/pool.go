package provisioner

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/spawnerhq/spawner/internal/catalog"
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

func (p *Provisioner) popPooled(app string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pool := p.pool[app]
	if len(pool) == 0 {
		return "", false
	}
	id := pool[len(pool)-1]
	p.pool[app] = pool[:len(pool)-1]
	return id, true
}

func (p *Provisioner) pushPooled(app, id string) {
	p.mu.Lock()
	p.pool[app] = append(p.pool[app], id)
	p.mu.Unlock()
}

// dropPooled forgets a session that ended while it waited in a pool, and
// has the pool refilled. Without it the pool counted the ended session
// as ready to claim, and stayed one short until a claim found it gone:
// the integration suite waited 30 s for a pool whose app had exited.
func (p *Provisioner) dropPooled(id string) {
	p.mu.Lock()
	found := false
	for app, ids := range p.pool {
		if i := slices.Index(ids, id); i >= 0 {
			p.pool[app], found = slices.Delete(ids, i, i+1), true
		}
	}
	p.mu.Unlock()
	if found {
		p.refillSoon()
	}
}

func (p *Provisioner) poolLen(app string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pool[app]) + p.poolFilling[app]
}

// claim hands a pooled session of app to req. It reports false when the
// pool is empty or the popped session is gone, and the caller spawns fresh.
func (p *Provisioner) claim(ctx context.Context, id string, req messages.SpawnRequest, app catalog.App) (messages.SpawnReply, bool) {
	defer p.refillSoon()
	entry, err := p.reg.Get(ctx, id)
	if err != nil || !entry.Session.Pooled || entry.Session.Status != messages.StatusReady || p.appOf(entry.Session) != app.Name {
		return messages.SpawnReply{}, false
	}
	s := entry.Session
	now := p.now().UTC()
	s.Pooled, s.ClaimedAt, s.CreatedAt = false, now, now
	s.Key, s.RequestID = req.Key, req.RequestID
	s.IdleTimeoutSeconds = seconds(req.IdleTimeoutSeconds, p.idleTimeout(app))
	s.MaxLifetimeSeconds = seconds(req.MaxLifetimeSeconds, p.maxLifetime(app))
	// The compare-and-swap is what makes a claim happen at most once, even
	// if two replicas ever held the same id.
	if _, err := p.reg.Update(ctx, s, entry.Revision); err != nil {
		return messages.SpawnReply{}, false
	}
	p.emit(messages.Event{Type: messages.EventReady, SessionID: id, App: s.App, RequestID: req.RequestID, Key: req.Key,
		URL: s.URL, Upstream: s.Upstream, Backend: s.Backend, Owner: s.Owner, Labels: s.Labels})
	return messages.SpawnReply{SessionID: id, URL: s.URL, Status: s.Status, Created: true, Key: req.Key}, true
}

// fromPool serves req from app's pool when it can: a pooled session of
// another app never serves it. With a key it binds the key to the pooled
// session first, so key races behave as for a spawn.
func (p *Provisioner) fromPool(ctx context.Context, req messages.SpawnRequest, app catalog.App) (messages.SpawnReply, bool, error) {
	if app.WarmPool <= 0 || !poolable(req) {
		return messages.SpawnReply{}, false, nil
	}
	id, ok := p.popPooled(app.Name)
	if !ok {
		p.refillSoon()
		return messages.SpawnReply{}, false, nil
	}
	if req.Key != "" {
		bound, err := p.reg.ClaimKey(ctx, req.Key, id)
		if err != nil {
			p.pushPooled(app.Name, id)
			if errors.Is(err, registry.ErrExists) {
				rep, ok, err := p.existing(ctx, req.Key, bound)
				return rep, ok, err
			}
			return messages.SpawnReply{}, false, nil
		}
	}
	rep, ok := p.claim(ctx, id, req, app)
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

// fillPool keeps every app's pool at its size until ctx ends. It reads
// the catalog at each round, so a reloaded catalog's pools fill too.
func (p *Provisioner) fillPool(ctx context.Context) {
	p.adoptPooled(ctx)
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		for _, app := range p.apps.Load().cat.Apps() {
			if app.WarmPool > 0 {
				p.fillApp(ctx, app)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-p.refill:
		case <-t.C:
		}
	}
}

// fillApp starts pooled sessions of app until its pool is full, or a
// spawn fails or capacity runs out.
func (p *Provisioner) fillApp(ctx context.Context, app catalog.App) {
	for p.poolLen(app.Name) < app.WarmPool && ctx.Err() == nil {
		id := messages.NewSessionID()
		if err := p.checkCapacity(ctx, id); err != nil {
			return
		}
		p.mu.Lock()
		p.poolFilling[app.Name]++
		p.mu.Unlock()
		_, err := p.create(ctx, id, messages.SpawnRequest{}, app, true)
		p.mu.Lock()
		p.poolFilling[app.Name]--
		p.mu.Unlock()
		if err != nil {
			p.log.Warn("warm pool spawn failed", "app", app.Name, "err", err)
			return
		}
		// A reload may have shrunk or dropped the pool while this started.
		if now, ok := p.apps.Load().cat.Get(app.Name); !ok || now.Name != app.Name || p.poolLen(app.Name) >= now.WarmPool {
			p.queueStop(id, messages.ReasonDeleted, "its app's warm pool shrank when the catalog was reloaded")
			return
		}
		p.pushPooled(app.Name, id)
	}
}

// appOf names the app of s; a record from before the catalog names none,
// and ran the default app.
func (p *Provisioner) appOf(s messages.Session) string {
	if s.App == "" {
		return p.apps.Load().cat.Default
	}
	return s.App
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
		if s.Pooled && s.Owner == p.name && s.Status == messages.StatusReady && s.Backend == p.cfg.Backend {
			if a, ok := p.apps.Load().cat.Get(p.appOf(s)); ok && a.WarmPool > 0 {
				p.pushPooled(a.Name, s.ID)
				continue
			}
			// Nobody can claim it: its app left the catalog or pools no more.
			p.queueStop(s.ID, messages.ReasonDeleted, "its app has no warm pool in the catalog")
		}
	}
}
