package provisioner

import (
	"errors"
	"strings"
	"time"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/messages"
)

// appSet is a catalog with what the provisioner derives from it.
type appSet struct {
	cat *catalog.Catalog
	// env holds the env policy of each app with an env_allow of its own.
	env map[string]messages.EnvPolicy
}

// checkCatalog settles the catalog the provisioner serves and refuses what
// it cannot: the gateway finds sessions one way, so an app may not ask for
// a routing mode that needs another.
func checkCatalog(cfg Config, cat *catalog.Catalog, routing messages.Routing) (*appSet, error) {
	if cat == nil {
		return &appSet{cat: catalog.Single(cfg.WarmPool)}, nil
	}
	if cfg.WarmPool > 0 {
		return nil, errors.New("SPAWNER_WARM_POOL_SIZE applies without SPAWNER_APPS only; set warm_pool per app in the catalog")
	}
	policies := map[string]messages.EnvPolicy{}
	err := cat.Check(func(a catalog.App) error {
		if a.Routing != "" && !mixable(routing, messages.Routing(a.Routing)) {
			return catalog.Fieldf("routing", "%s: this installation routes by SPAWNER_ROUTING=%s, and the gateway finds "+
				"sessions by host under subdomain routing and by /p/<id>/ otherwise, one way for all; leave routing out, "+
				"or mix only path and path-keep", a.Routing, routing)
		}
		if len(a.EnvAllow) > 0 {
			pol, err := messages.ParseEnvPolicy(strings.Join(a.EnvAllow, ","))
			if err != nil {
				return catalog.Fieldf("env_allow", "%v", err)
			}
			policies[a.Name] = pol
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &appSet{cat: cat, env: policies}, nil
}

// SetCatalog puts a new catalog in force, as on SIGHUP, or refuses it and
// keeps the old one. Live sessions keep running as they are. Each app's
// warm pool moves to its new size: pooled sessions of an app that left the
// catalog, or beyond its new warm_pool, are stopped, and the pools of new
// or grown apps fill in the background.
func (p *Provisioner) SetCatalog(cat *catalog.Catalog) error {
	set, err := checkCatalog(p.cfg, cat, p.routing)
	if err != nil {
		return err
	}
	p.mx.KnowApps(set.cat.Names())
	p.apps.Store(set)
	p.mu.Lock()
	var excess []string
	for name, pool := range p.pool {
		size := 0
		if a, ok := set.cat.Get(name); ok && a.Name == name {
			size = a.WarmPool
		}
		if len(pool) > size {
			excess = append(excess, pool[size:]...)
			p.pool[name] = pool[:size]
		}
	}
	p.mu.Unlock()
	for _, id := range excess {
		p.queueStop(id, messages.ReasonDeleted, "its app's warm pool shrank when the catalog was reloaded")
	}
	p.refillSoon()
	p.log.Info("catalog in force", "apps", strings.Join(set.cat.Names(), ","), "default", set.cat.Default)
	return nil
}

// mixable reports whether an app may route by mode in an installation
// routing by installed: path and path-keep both address sessions by
// /p/<id>/, and differ only in the path the app sees.
func mixable(installed, mode messages.Routing) bool {
	if installed == mode {
		return true
	}
	return installed != messages.RoutingSubdomain && mode != messages.RoutingSubdomain
}

// routingOf is the app's routing mode, or the installation's.
func (p *Provisioner) routingOf(app catalog.App) messages.Routing {
	if app.Routing != "" {
		return messages.Routing(app.Routing)
	}
	return p.routing
}

// resolve finds the app req names and checks the request against it.
func (p *Provisioner) resolve(req messages.SpawnRequest) (catalog.App, error) {
	set := p.apps.Load()
	app, err := set.cat.Resolve(req.App)
	if err != nil {
		return app, err
	}
	pol, ok := set.env[app.Name]
	if !ok {
		pol = p.env
	}
	return app, pol.Check(req.Env)
}

// idleTimeout is the app's idle timeout, or the installation's.
func (p *Provisioner) idleTimeout(app catalog.App) time.Duration {
	if app.IdleTimeout > 0 {
		return app.IdleTimeout
	}
	return p.cfg.IdleTimeout
}

// maxLifetime is the app's max lifetime, or the installation's.
func (p *Provisioner) maxLifetime(app catalog.App) time.Duration {
	if app.MaxLifetime > 0 {
		return app.MaxLifetime
	}
	return p.cfg.MaxLifetime
}

// spec is what the backend needs to start a session of app: the app's
// defaults under the request's env, and its labels over the request's.
func (p *Provisioner) spec(id, url string, req messages.SpawnRequest, app catalog.App) Spec {
	return Spec{SessionID: id, URL: url, BasePath: p.routingOf(app).BasePath(id),
		Env: merge(app.Env, req.Env), Labels: merge(req.Labels, app.Labels),
		App: app.Name, Command: app.Command, Image: app.Image, Resources: app.Resources,
		PodTemplate: app.PodTemplate, StatusSource: app.StatusSource}
}

// merge returns a's entries overwritten by b's; nil when both are empty.
func merge(a, b map[string]string) map[string]string {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
