package prober

import (
	"bufio"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/settings"
)

// hostileApp answers every request with head, then writes filler until the
// prober hangs up: an endless header line, or an endless body.
func hostileApp(t *testing.T, head string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	filler := []byte(strings.Repeat("a", 32<<10))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Read the request line so that the prober has sent it.
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					return
				}
				if _, err := c.Write([]byte(head)); err != nil {
					return
				}
				for {
					if _, err := c.Write(filler); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/status"
}

// Ten apps that answer /status with an endless header line or an endless
// body cost the prober little memory, and each probe fails with a clear error.
func TestStatusClientBoundsHostileAnswers(t *testing.T) {
	heads := map[string]string{
		"endless header line": "HTTP/1.1 200 OK\r\nX-Pad: ",
		"endless status line": "HTTP/1.1 200 ",
		"huge body":           "HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n{\"pad\":\"",
		"endless chunk":       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffff\r\n",
		"endless body":        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
	}
	type app struct{ name, url string }
	var apps []app
	for len(apps) < 10 {
		for name, head := range heads {
			apps = append(apps, app{name, hostileApp(t, head)})
		}
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	errs := make([]error, len(apps))
	for i, a := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newStatusClient(a.url, Config{Probing: settings.Probing{ProbeInterval: time.Second}}, nil)
			defer c.close()
			// Three rounds, as the prober would run them.
			for range 3 {
				if _, errs[i] = c.fetch(time.Second); errs[i] == nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	for i, a := range apps {
		if errs[i] == nil || !strings.Contains(errs[i].Error(), "over") {
			t.Errorf("%s: error %v, want one saying the answer is over a limit", a.name, errs[i])
		}
	}
	// Before the bound, one endless header line cost hundreds of megabytes
	// within a one-second probe; the goal is under 20 MB for ten such apps.
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 20<<20 {
		t.Errorf("probing %d hostile apps allocated %d MB, want under 20 MB", len(apps), grown>>20)
	} else {
		t.Logf("probing %d hostile apps allocated %d KB", len(apps), grown>>10)
	}
}
