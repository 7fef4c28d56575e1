package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// routeTable maps ready sessions to their upstreams. It is fed by the
// registry watch, so a proxied request costs a map lookup, not a KV read.
type routeTable struct {
	mu     sync.RWMutex
	routes map[string]string
}

func newRouteTable() *routeTable { return &routeTable{routes: map[string]string{}} }

func (t *routeTable) apply(s messages.Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.Status == messages.StatusReady && s.Upstream != "" {
		t.routes[s.ID] = s.Upstream
	} else {
		delete(t.routes, s.ID)
	}
}

func (t *routeTable) remove(id string) {
	t.mu.Lock()
	delete(t.routes, id)
	t.mu.Unlock()
}

func (t *routeTable) lookup(id string) (string, bool) {
	t.mu.RLock()
	u, ok := t.routes[id]
	t.mu.RUnlock()
	return u, ok
}

type upstreamKey struct{}

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
			upstream := pr.In.Context().Value(upstreamKey{}).(string)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = upstream
			pr.Out.Host = pr.In.Host
			dropForgedHeaders(pr.Out.Header)
			pr.SetXForwarded()
			if prefix, ok := pr.In.Context().Value(prefixKey{}).(string); ok {
				pr.Out.Header.Set("X-Forwarded-Prefix", prefix)
			}
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

type prefixKey struct{}

func (p *proxy) closeIdle() { p.transport.CloseIdleConnections(); p.fast.closeIdle() }

func (g *Gateway) proxySession(w http.ResponseWriter, r *http.Request) {
	id, rest, _ := sessionIDFromProxyPath(r.URL.Path)
	if !validSessionID(id) {
		writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no live session at this path"))
		return
	}
	if !g.authorizeSession(w, r, id) {
		return
	}
	upstream, ok := g.routes.lookup(id)
	if !ok {
		// The reply to /init can reach a client before the watch reaches
		// us; one registry read closes that gap.
		entry, err := g.reg.Get(r.Context(), id)
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			g.log.Warn("route lookup", "session_id", id, "err", err)
			writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "the session registry cannot be read"))
			return
		}
		if err != nil || entry.Session.Status != messages.StatusReady {
			writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no live session %q", id))
			return
		}
		g.routes.apply(entry.Session)
		upstream = entry.Session.Upstream
	}
	if rest == "" {
		target := "/p/" + id + "/"
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusPermanentRedirect)
		return
	}
	g.guardBody(w, r)
	prefix := "/p/" + id
	// The request is ours to change: only the path loses its prefix.
	r.URL.Path = rest
	if r.URL.RawPath != "" {
		r.URL.RawPath = strings.TrimPrefix(r.URL.RawPath, prefix)
	}
	g.proxy.fast.forward(w, r, upstream, prefix)
}
