package prober

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/internal/settings"
)

// Past the budget, targets are probed on a new connection each time and
// keep none; the budget comes back as targets go.
func TestKeptConnectionsStayWithinTheBudget(t *testing.T) {
	srv, conns := statusServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"active_connections":0,"seconds_inactive":1,"listening":true}`)
	})
	budget := newConnBudgetOf(2)
	var clients []*statusClient
	for range 5 {
		clients = append(clients, newStatusClient(srv.URL+"/status", Config{Probing: settings.Probing{ProbeInterval: time.Second}}, budget))
	}
	for round := range 3 {
		for i, c := range clients {
			if _, err := c.fetch(2 * time.Second); err != nil {
				t.Fatalf("round %d, target %d: %v", round, i, err)
			}
		}
	}
	kept := 0
	for _, c := range clients {
		c.mu.Lock()
		if c.conn != nil {
			kept++
		}
		c.mu.Unlock()
	}
	if kept != 2 || budget.left.Load() != 0 {
		t.Errorf("%d connections kept, %d left in the budget; want 2 and 0", kept, budget.left.Load())
	}
	// Two targets kept theirs; the three others dialed on each of 3 rounds.
	if n := conns.Load(); n != 2+3*3 {
		t.Errorf("%d connections opened, want 11", n)
	}
	for _, c := range clients {
		c.close()
	}
	if n := budget.left.Load(); n != 2 {
		t.Errorf("%d left in the budget after every target went, want 2", n)
	}
}

// A target that goes while its probe is in flight keeps no connection.
func TestClosedClientKeepsNothing(t *testing.T) {
	release := make(chan struct{})
	srv, _ := statusServer(t, func(w http.ResponseWriter, _ *http.Request) {
		<-release
		_, _ = io.WriteString(w, `{"active_connections":0,"seconds_inactive":1,"listening":true}`)
	})
	budget := newConnBudgetOf(1)
	c := newStatusClient(srv.URL+"/status", Config{Probing: settings.Probing{ProbeInterval: time.Second}}, budget)
	done := make(chan error, 1)
	go func() { _, err := c.fetch(5 * time.Second); done <- err }()
	time.Sleep(100 * time.Millisecond)
	c.close()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	kept := c.conn != nil
	c.mu.Unlock()
	if kept || budget.left.Load() != 1 {
		t.Errorf("kept %v, %d left in the budget; want nothing kept and 1", kept, budget.left.Load())
	}
}

func TestLocalFailures(t *testing.T) {
	wrap := func(errno syscall.Errno) error {
		return fmt.Errorf("GET /status: %w", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", errno)})
	}
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.EADDRNOTAVAIL} {
		if !localFailure(wrap(errno)) {
			t.Errorf("%v is the prober's own failure", errno)
		}
	}
	for _, err := range []error{wrap(syscall.ECONNREFUSED), wrap(syscall.ECONNRESET), errors.New("/status answered 500")} {
		if localFailure(err) {
			t.Errorf("%v is the app's failure", err)
		}
	}
}
