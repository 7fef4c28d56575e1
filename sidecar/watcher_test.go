package sidecar

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

func mustWatcher(t testing.TB, port int, clock func() time.Time, tables Tables) *Watcher {
	t.Helper()
	w, err := NewWatcher(port, clock, tables)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func mustStatus(t testing.TB, w *Watcher) messages.AppStatus {
	t.Helper()
	st, err := w.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestNewWatcherValidates(t *testing.T) {
	for _, port := range []int{-1, 0, 65536, 1 << 20} {
		if _, err := NewWatcher(port, nil, DefaultTables); err == nil {
			t.Errorf("port %d accepted", port)
		}
	}
	if _, err := NewWatcher(80, nil, Tables{TCP6: "x"}); err == nil {
		t.Error("tables without TCP accepted")
	}
	for _, port := range []int{1, 65535} {
		if _, err := NewWatcher(port, nil, DefaultTables); err != nil {
			t.Errorf("port %d: %v", port, err)
		}
	}
}

func TestProcTables(t *testing.T) {
	got := ProcTables(42)
	if got.TCP != "/proc/42/net/tcp" || got.TCP6 != "/proc/42/net/tcp6" {
		t.Errorf("ProcTables(42) = %+v", got)
	}
}

// TestWatcherIdleClock drives the watcher through tables written to disk, so
// every transition of seconds_inactive is asserted against an exact clock.
func TestWatcherIdleClock(t *testing.T) {
	const port = 8080
	dir := t.TempDir()
	app, peer := "10.0.0.5:8080", "10.0.0.9:40000"
	listen := Conn{ap("0.0.0.0:8080"), ap("0.0.0.0:0"), StateListen}
	client := Conn{ap(app), ap(peer), StateEstablished}
	set := func(conns ...Conn) { writeTable(t, dir, "tcp", conns...) }

	set(listen)
	clock := newFakeClock()
	w := mustWatcher(t, port, clock.Now, Tables{TCP: filepath.Join(dir, "tcp"), TCP6: filepath.Join(dir, "tcp6")})

	check := func(step string, active int, inactive int64, listening bool) {
		t.Helper()
		want := messages.AppStatus{ActiveConnections: active, SecondsInactive: inactive, Listening: listening}
		if got := mustStatus(t, w); got != want {
			t.Errorf("%s: got %+v, want %+v", step, got, want)
		}
	}

	check("fresh", 0, 0, true)
	clock.Advance(30 * time.Second)
	check("never used: counts from creation", 0, 30, true)

	set(listen, client)
	check("client arrives", 1, 0, true)
	clock.Advance(10 * time.Minute)
	check("still connected", 1, 0, true)

	// Endings of the conversation, outbound calls and handshakes are not use.
	set(listen,
		Conn{ap(app), ap(peer), StateTimeWait},
		Conn{ap(app), ap("10.0.0.9:40001"), StateCloseWait},
		Conn{ap(app), ap("10.0.0.9:40002"), StateFinWait1},
		Conn{ap(app), ap("10.0.0.9:40003"), StateSynRecv},
		Conn{ap(app), ap("10.0.0.9:40004"), StateNewSynRecv},
		Conn{ap("10.0.0.5:50000"), ap("10.0.0.7:8080"), StateEstablished})
	check("first poll without a client", 0, 0, true)
	clock.Advance(7 * time.Second)
	check("idle since that poll", 0, 7, true)

	// A failed read changes nothing.
	if err := os.WriteFile(filepath.Join(dir, "tcp"), []byte(header4+"\n   0: junk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	clock.Advance(3 * time.Second)
	if _, err := w.Status(); err == nil {
		t.Fatal("malformed table accepted")
	}
	set()
	check("after an error, not listening", 0, 10, false)

	clock.Advance(-time.Hour)
	check("clock stepped back", 0, 0, false)
}

func TestWatcherTables(t *testing.T) {
	dir := t.TempDir()
	tcp := writeTable(t, dir, "tcp", Conn{ap("127.0.0.1:9000"), ap("127.0.0.1:40000"), StateEstablished})
	tcp6 := filepath.Join(dir, "tcp6")
	if err := os.WriteFile(tcp6, []byte(header6+"\n"+
		formatLine(0, Conn{ap("[::]:9000"), ap("[::]:0"), StateListen})+"\n"+
		formatLine(1, Conn{ap("[::ffff:10.0.0.1]:9000"), ap("[::ffff:10.0.0.2]:41000"), StateEstablished})+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Both tables add up, and listening may come from either.
	st := mustStatus(t, mustWatcher(t, 9000, nil, Tables{TCP: tcp, TCP6: tcp6}))
	if st.ActiveConnections != 2 || !st.Listening {
		t.Errorf("both tables: %+v", st)
	}
	// A missing or unnamed tcp6 is an IPv4-only kernel, not a failure.
	for _, t6 := range []string{filepath.Join(dir, "absent"), ""} {
		st = mustStatus(t, mustWatcher(t, 9000, nil, Tables{TCP: tcp, TCP6: t6}))
		if st.ActiveConnections != 1 || st.Listening {
			t.Errorf("tcp6 %q: %+v", t6, st)
		}
	}
	// A missing tcp is: /proc is not mounted and nothing can be known.
	_, err := mustWatcher(t, 9000, nil, Tables{TCP: filepath.Join(dir, "absent"), TCP6: tcp6}).Status()
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing tcp: got %v", err)
	}
	// An unreadable tcp6 (a directory) is an error, not silently IPv4-only.
	if _, err := mustWatcher(t, 9000, nil, Tables{TCP: tcp, TCP6: dir}).Status(); err == nil {
		t.Error("unreadable tcp6 accepted")
	}
}

// TestWatcherLoopback opens real connections and reads the real kernel table.
func TestWatcherLoopback(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("cannot listen on %s: %v", addr, err)
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			accepted := make(chan net.Conn, 16)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted <- c
				}
			}()

			clock := newFakeClock()
			w := mustWatcher(t, port, clock.Now, DefaultTables)
			if st := mustStatus(t, w); st != (messages.AppStatus{Listening: true}) {
				t.Fatalf("before any client: %+v", st)
			}

			// Both ends of each loopback connection are in the table; only
			// the server end has the app port as its local port.
			const n = 5
			var clients, servers []net.Conn
			for range n {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				clients = append(clients, c)
				servers = append(servers, <-accepted)
			}
			if st := waitFor(t, w, func(st messages.AppStatus) bool { return st.ActiveConnections == n }); st.SecondsInactive != 0 || !st.Listening {
				t.Fatalf("with %d clients: %+v", n, st)
			}
			clock.Advance(time.Minute)
			if st := mustStatus(t, w); st.ActiveConnections != n || st.SecondsInactive != 0 {
				t.Fatalf("a minute later: %+v", st)
			}

			// The server closes first, so its end lingers in TIME_WAIT on
			// the app port and must not count.
			for _, c := range servers {
				c.Close()
			}
			for _, c := range clients {
				c.Close()
			}
			waitFor(t, w, func(st messages.AppStatus) bool { return st.ActiveConnections == 0 })
			if !hasTimeWait(t, uint16(port)) {
				t.Error("expected a TIME_WAIT socket on the app port to prove it is ignored")
			}
			clock.Advance(42 * time.Second)
			if st := mustStatus(t, w); st != (messages.AppStatus{SecondsInactive: 42, Listening: true}) {
				t.Errorf("42 s after the last close: %+v", st)
			}

			ln.Close()
			if st := mustStatus(t, w); st.Listening || st.SecondsInactive != 42 {
				t.Errorf("after the listener closed: %+v", st)
			}
		})
	}
}

// waitFor polls until ok holds: the kernel updates the table asynchronously
// to the calls that open and close sockets.
func waitFor(t *testing.T, w *Watcher, ok func(messages.AppStatus) bool) messages.AppStatus {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := mustStatus(t, w)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting; last status %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hasTimeWait(t *testing.T, port uint16) bool {
	found := false
	for _, path := range []string{DefaultTables.TCP, DefaultTables.TCP6} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		err = ScanTable(f, func(c Conn) error {
			found = found || (c.Local.Port() == port && c.State == StateTimeWait)
			return nil
		})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return found
}

func TestWatcherConcurrent(t *testing.T) {
	dir := t.TempDir()
	conns := make([]Conn, 50)
	for i := range conns {
		conns[i] = Conn{ap("10.0.0.1:7000"), netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), uint16(30000+i)), StateEstablished}
	}
	w := mustWatcher(t, 7000, nil, Tables{TCP: writeTable(t, dir, "tcp", conns...)})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for range 20 {
				st, err := w.Status()
				if err == nil && st.ActiveConnections != len(conns) {
					err = errors.New("got " + strconv.Itoa(st.ActiveConnections) + " connections")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
