package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// routeTable maps ready sessions to their upstreams. It is fed by the
// registry watch, so a proxied request costs a map lookup, not a KV read.
type routeTable struct {
	mu     sync.RWMutex
	routes map[string]*sessionRoute
}

// sessionRoute is one ready session as the proxy needs it.
type sessionRoute struct {
	upstream string
	// mode is the session's own routing mode, from its app; empty is the
	// installation's. Only path and path-keep differ here.
	mode messages.Routing
	// act counts the session's traffic when the proxy is one of its
	// status sources, and is nil otherwise, so other sessions pay nothing.
	act *sessionActivity
}

func newRouteTable() *routeTable { return &routeTable{routes: map[string]*sessionRoute{}} }

func (t *routeTable) apply(s messages.Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.Status != messages.StatusReady || s.Upstream == "" {
		delete(t.routes, s.ID)
		return
	}
	old := t.routes[s.ID]
	if old != nil && old.upstream == s.Upstream && (old.act != nil) == s.ProxyActivity && old.mode == s.Routing {
		return // Keep the activity counted so far.
	}
	rt := &sessionRoute{upstream: s.Upstream, mode: s.Routing}
	if s.ProxyActivity {
		rt.act = &sessionActivity{}
		rt.act.touch()
	}
	t.routes[s.ID] = rt
}

func (t *routeTable) remove(id string) {
	t.mu.Lock()
	delete(t.routes, id)
	t.mu.Unlock()
}

func (t *routeTable) lookup(id string) (*sessionRoute, bool) {
	t.mu.RLock()
	r, ok := t.routes[id]
	t.mu.RUnlock()
	return r, ok
}

// eachActivity calls fn for every session whose traffic is counted.
func (t *routeTable) eachActivity(fn func(id string, a *sessionActivity)) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for id, r := range t.routes {
		if r.act != nil {
			fn(id, r.act)
		}
	}
}

// forwardingKey carries a forwarding to the standard reverse proxy.
type forwardingKey struct{}

// proxy forwards to upstreams taken only from the registry, never from the
// request, so a client cannot make Spawner connect where it chooses.
type proxy struct {
	rp        *httputil.ReverseProxy
	transport *http.Transport
	fast      *fastProxy
}

func newProxy(upstreamIdle time.Duration, log *slog.Logger) *proxy {
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       upstreamIdle,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
	}
	p := &proxy{transport: transport}
	p.rp = &httputil.ReverseProxy{
		Transport: transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			fwd := pr.In.Context().Value(forwardingKey{}).(forwarding)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = fwd.upstream
			pr.Out.Host = pr.In.Host
			dropForgedHeaders(pr.Out.Header)
			pr.SetXForwarded()
			if fwd.prefix != "" {
				pr.Out.Header.Set("X-Forwarded-Prefix", fwd.prefix)
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if fwd := resp.Request.Context().Value(forwardingKey{}).(forwarding); fwd.prefix != "" {
				rewriteResponse(resp.Header, fwd.prefix, fwd.upstream, fwd.publicHost)
			}
			return nil
		},
		// Flush at once so that streamed responses and server-sent events
		// reach the browser as they are written.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			log.Debug("upstream error", "path", r.URL.Path, "err", err)
			writeError(w, http.StatusBadGateway, messages.Errorf(messages.CodeUnavailable, "the session's app is not answering"))
		},
	}
	p.fast = newFastProxy(upstreamIdle, p.rp, log)
	return p
}

func (p *proxy) closeIdle() { p.transport.CloseIdleConnections(); p.fast.closeIdle() }

func (g *Gateway) proxySession(w http.ResponseWriter, r *http.Request) {
	a, _ := g.router.address(r)
	if !validSessionID(a.id) {
		writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no live session at this address"))
		return
	}
	if !g.authorizeSession(w, r, a) {
		return
	}
	rt, ok := g.routes.lookup(a.id)
	if !ok {
		// The reply to /init can reach a client before the watch reaches
		// us; one registry read closes that gap.
		entry, err := g.reg.Get(r.Context(), a.id)
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			g.log.Warn("route lookup", "session_id", a.id, "err", err)
			writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "the session registry cannot be read"))
			return
		}
		if err != nil || entry.Session.Status != messages.StatusReady {
			writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no live session %q", a.id))
			return
		}
		g.routes.apply(entry.Session)
		if rt, ok = g.routes.lookup(a.id); !ok {
			writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no live session %q", a.id))
			return
		}
	}
	if a.prefix != "" && a.rest == "" {
		target := a.prefix + "/"
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusPermanentRedirect)
		return
	}
	g.guardBody(w, r)
	fwd := forwarding{upstream: rt.upstream, act: rt.act, publicHost: r.Host}
	// Only under path routing does the app see other paths than the
	// browser, so only then is X-Forwarded-Prefix set and are its
	// redirects and cookies rewritten. A session's app may pick path or
	// path-keep for itself where the installation routes by either.
	mode := g.router.mode
	if rt.mode != "" && mode != messages.RoutingSubdomain {
		mode = rt.mode
	}
	strip := mode == messages.RoutingPath
	if strip {
		fwd.prefix = a.prefix
	}
	if rt.act != nil {
		done := rt.act.begin(r.Header.Get("Upgrade") != "")
		defer done()
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &activityBody{ReadCloser: r.Body, act: rt.act}
		}
	}
	// The request is ours to change: only the path may lose its prefix.
	if strip {
		stripPrefix(r, a)
	}
	g.proxy.fast.forward(w, r, fwd)
}

// forwarding is where and how one request is proxied.
type forwarding struct {
	upstream string
	// prefix is "/p/<id>" under path routing, for X-Forwarded-Prefix and
	// for rewriting the app's redirects and cookies; "" otherwise.
	prefix string
	// publicHost is the Host the browser used, so that a redirect the app
	// built from it can be kept inside the session.
	publicHost string
	// act, when set, counts the traffic for the proxy status source.
	act *sessionActivity
}
