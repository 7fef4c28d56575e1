package sidecar

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

// Tables names the kernel TCP tables a Watcher reads.
type Tables struct {
	// TCP is the IPv4 table; it must exist.
	TCP string
	// TCP6 is the IPv6 table. It may be empty or missing, because a kernel
	// booted with IPv6 disabled has no tcp6 file and the app is then simply
	// IPv4-only.
	TCP6 string
}

// DefaultTables are the tables of the reader's own network namespace, which
// is the app's when the sidecar shares its pod or namespace.
var DefaultTables = Tables{TCP: "/proc/net/tcp", TCP6: "/proc/net/tcp6"}

// ProcTables returns the tables of the network namespace of process pid, for
// a sidecar that watches an app in a namespace it is not itself in.
func ProcTables(pid int) Tables {
	dir := "/proc/" + strconv.Itoa(pid) + "/net/"
	return Tables{TCP: dir + "tcp", TCP6: dir + "tcp6"}
}

// Watcher turns reads of the TCP tables into an AppStatus for one app port.
// It is safe for concurrent use.
type Watcher struct {
	port   uint16
	clock  func() time.Time
	tables Tables

	// mu serialises polls: the idle bookkeeping is a read-modify-write, and
	// two overlapping reads of a 10k-socket table would only waste CPU.
	mu sync.Mutex
	// active is whether the previous successful poll saw a connection.
	active bool
	// idleSince is when the app was last seen to have no connection: the
	// creation time, or the first poll that found the last one gone.
	idleSince time.Time
}

// NewWatcher returns a Watcher for the app listening on port, reading tables
// and telling time with clock (time.Now when nil). The idle clock starts now.
func NewWatcher(port int, clock func() time.Time, tables Tables) (*Watcher, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("sidecar: app port %d is not in 1-65535", port)
	}
	if tables.TCP == "" {
		return nil, errors.New("sidecar: no TCP table to read")
	}
	if clock == nil {
		clock = time.Now
	}
	return &Watcher{port: uint16(port), clock: clock, tables: tables, idleSince: clock()}, nil
}

// Port returns the app port the Watcher counts connections on.
func (w *Watcher) Port() int { return int(w.port) }

// Status reads the tables afresh and reports the app's connections, how long
// it has had none, and whether it is listening. A failed read leaves the idle
// bookkeeping untouched, so a transient error cannot reset or advance it.
func (w *Watcher) Status() (messages.AppStatus, error) {
	w.mu.Lock()
	defer w.mu.Unlock()

	established, listening, err := w.read(w.tables.TCP, false)
	if err != nil {
		return messages.AppStatus{}, err
	}
	if w.tables.TCP6 != "" {
		e6, l6, err := w.read(w.tables.TCP6, true)
		if err != nil {
			return messages.AppStatus{}, err
		}
		established += e6
		listening = listening || l6
	}

	now := w.clock()
	st := messages.AppStatus{ActiveConnections: established, Listening: listening}
	switch {
	case established > 0:
		w.active = true
	case w.active:
		// The poll that first sees no connection starts the idle clock, not
		// the last poll that saw one: the last one may have left just now.
		w.active = false
		w.idleSince = now
	default:
		// A clock that steps backwards must not yield negative idleness.
		st.SecondsInactive = max(0, int64(now.Sub(w.idleSince)/time.Second))
	}
	return st, nil
}

func (w *Watcher) read(path string, optional bool) (int, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		if optional && errors.Is(err, fs.ErrNotExist) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("sidecar: %w", err)
	}
	defer f.Close()
	established, listening, err := Count(f, w.port)
	if err != nil {
		return 0, false, fmt.Errorf("sidecar: %s: %w", path, err)
	}
	return established, listening, nil
}
