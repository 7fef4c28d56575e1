package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// benchRoutes fills a route table with n sessions and returns their ids.
func benchRoutes(n int) (*routeTable, []string) {
	t := newRouteTable()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = messages.NewSessionID()
		t.apply(messages.Session{ID: ids[i], Status: messages.StatusReady, Upstream: "127.0.0.1:9"})
	}
	return t, ids
}

// BenchmarkSessionLookup is the per-request route lookup with 10,000 live
// sessions: split the path, check the id, find the upstream.
func BenchmarkSessionLookup(b *testing.B) {
	routes, ids := benchRoutes(10_000)
	paths := make([]string, len(ids))
	for i, id := range ids {
		paths[i] = "/p/" + id + "/api/items?page=2"
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			id, _, _, _ := splitProxyPath(paths[i%len(paths)])
			if !validSessionID(id) {
				b.Fatal("invalid id")
			}
			if _, ok := routes.lookup(id); !ok {
				b.Fatal("no route")
			}
			i++
		}
	})
	// The lookup as proxySession first wrote it, for comparison.
	b.Run("regexp", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			id, rest, _ := sessionIDFromProxyPath(paths[i%len(paths)])
			if !messages.ValidSessionID(id) {
				b.Fatal("invalid id")
			}
			if _, ok := routes.lookup(id); !ok {
				b.Fatal("no route")
			}
			_ = "/p/" + id + rest
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				id, _, _, _ := splitProxyPath(paths[i%len(paths)])
				if _, ok := routes.lookup(id); !ok || !validSessionID(id) {
					b.Error("no route")
					return
				}
				i++
			}
		})
	})
}

// BenchmarkProxy sends small JSON requests through the whole gateway
// handler to a real upstream, over real sockets, from parallel clients.
func BenchmarkProxy(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"items":[1,2,3]}`)
	}))
	defer up.Close()
	env := bustest.Run(b)
	reg := registry.New(env.KV)
	g, err := New(Config{Prefix: "spawner", SpawnTimeout: time.Second}, env.Conn, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	s := messages.Session{ID: messages.NewSessionID(), Status: messages.StatusReady,
		Upstream: strings.TrimPrefix(up.URL, "http://"), CreatedAt: time.Now()}
	if _, err := reg.Create(context.Background(), s); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	url := "http://" + ln.Addr().String() + "/p/" + s.ID + "/api/items"
	for { // the registry watch feeds the route table
		if _, ok := g.routes.lookup(s.ID); ok {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

func TestSplitProxyPath(t *testing.T) {
	cases := []struct{ path, id, rest, prefix string }{
		{"/p/" + fpSession + "/a/b", fpSession, "/a/b", "/p/" + fpSession},
		{"/p/" + fpSession + "/", fpSession, "/", "/p/" + fpSession},
		{"/p/" + fpSession, fpSession, "", "/p/" + fpSession},
		{"/p//x", "", "/x", "/p/"},
	}
	for _, c := range cases {
		id, rest, prefix, ok := splitProxyPath(c.path)
		if !ok || id != c.id || rest != c.rest || prefix != c.prefix {
			t.Errorf("splitProxyPath(%q) = %q %q %q %v", c.path, id, rest, prefix, ok)
		}
	}
	if _, _, _, ok := splitProxyPath("/q/x"); ok {
		t.Error("a path outside /p/ was accepted")
	}
}

// FuzzProxyPath holds the allocation-free path split and id check to the
// definitions the rest of Spawner uses.
func FuzzProxyPath(f *testing.F) {
	for _, s := range []string{"/p/" + fpSession + "/x?y", "/p/", "/p/ABCDEFGHIJKLMNOPQRSTUVWXYZ/", "/p/abc", "/x", "/p/" + fpSession} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		id, rest, prefix, ok := splitProxyPath(path)
		wid, wrest, wok := sessionIDFromProxyPath(path)
		if ok != wok || id != wid || rest != wrest {
			t.Fatalf("splitProxyPath(%q) = %q %q %v; sessionIDFromProxyPath = %q %q %v", path, id, rest, ok, wid, wrest, wok)
		}
		if ok && prefix+rest != path {
			t.Fatalf("prefix %q + rest %q != %q", prefix, rest, path)
		}
		if validSessionID(id) != messages.ValidSessionID(id) {
			t.Fatalf("validSessionID(%q) = %v, messages says %v", id, validSessionID(id), messages.ValidSessionID(id))
		}
	})
}
