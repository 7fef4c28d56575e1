package process_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/process"
	"github.com/spawnerhq/spawner/provisioner/process/apphelper"
)

// spares lists this process's children that are isolation helpers still
// waiting for a job: they run as root under the helper's name, and have
// not yet started an app.
func spares() []int {
	return pidsWhere(func(pid int) bool {
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil || !strings.HasPrefix(string(cmdline), apphelper.Name+"\x00spare") {
			return false
		}
		state, ppid, _, ok := procStat(pid)
		return ok && ppid == os.Getpid() && running(state) && len(childrenOf(pid)) == 0
	})
}

// namespacedBackend is a backend, not yet running, whose apps get
// namespaces and a uid from uids; it skips the test where the host
// allows no namespaces.
func namespacedBackend(t *testing.T, uids string) *process.Backend {
	t.Helper()
	needRoot(t)
	b := newBackend(t, process.Config{UIDRange: uids})
	if b.Isolation() != process.IsolationNamespaces {
		t.Skipf("isolation %q: the host allows no namespaces", b.Isolation())
	}
	return b
}

// awaitSpare waits for exactly one spare and returns it.
func awaitSpare(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		if s := spares(); len(s) == 1 {
			return s[0]
		} else if len(s) > 1 {
			t.Fatalf("%d spare helpers wait, want one: %v", len(s), s)
		}
		if time.Now().After(deadline) {
			t.Fatal("no spare isolation helper waits")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// An isolated start takes the helper that waits ready in its namespaces,
// which starts the app as the session's uid and stays, as root, its
// parent; another takes its place, and none outlives the backend.
func TestIsolatedStartTakesTheWaitingSpare(t *testing.T) {
	b := namespacedBackend(t, "2000100020-2000100029")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, make(chan provisioner.Exit, 16)) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	for range 2 {
		waiting := awaitSpare(t)
		inst := start(t, b, provisioner.Spec{SessionID: messages.NewSessionID()})
		if pid := pidOf(t, inst); pid != waiting {
			t.Fatalf("the session's pid is %d, not the spare %d that waited", pid, waiting)
		}
		if uid := uidOf(t, waiting); uid != 0 {
			t.Fatalf("the spare runs as uid %d once it started the app, want root", uid)
		}
		if uid := uidOf(t, appPidOf(t, inst)); uid < 2000100020 || uid > 2000100029 {
			t.Fatalf("the spare's app runs as uid %d, want one from the session's range", uid)
		}
	}
	awaitSpare(t)
	cancel()
	err := <-done
	stopped = true
	if err != nil {
		t.Fatal(err)
	}
	if s := spares(); len(s) > 0 {
		t.Fatalf("spares %v outlive the backend", s)
	}
}

// A spare that died while it waited costs its session nothing: the start
// runs in a new helper.
func TestIsolatedStartSurvivesADeadSpare(t *testing.T) {
	b := namespacedBackend(t, "2000100030-2000100039")
	runBackend(t, b)
	dead := awaitSpare(t)
	if err := syscall.Kill(dead, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Let it die, unreaped, before the start comes: every thread of it,
	// for its last one holds the job pipe open.
	awaitDead(t, "the killed spare", func() bool { return threadsAlive(dead) })
	inst := start(t, b, provisioner.Spec{SessionID: messages.NewSessionID()})
	if pid := pidOf(t, inst); pid == dead {
		t.Fatalf("the app claims the dead spare's pid %d", pid)
	}
	var status messages.AppStatus
	getJSON(t, inst.StatusURL, &status)
	if !status.Listening {
		t.Fatalf("the app answers %+v", status)
	}
}

// Starts that come together share the one spare and start helpers of
// their own for the rest; each app is its own, and one spare waits after.
func TestIsolatedStartsTogether(t *testing.T) {
	b := namespacedBackend(t, "2000100040-2000100049")
	runBackend(t, b)
	awaitSpare(t)
	const n = 4
	insts := make([]provisioner.Instance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			id := messages.NewSessionID()
			t.Cleanup(func() { _ = b.Stop(context.Background(), id) })
			insts[i], errs[i] = b.Start(ctx, provisioner.Spec{SessionID: id})
		})
	}
	wg.Wait()
	pids := map[int]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		pid := pidOf(t, insts[i])
		if pids[pid] {
			t.Fatalf("two sessions run in pid %d", pid)
		}
		pids[pid] = true
		var status messages.AppStatus
		getJSON(t, insts[i].StatusURL, &status)
	}
	awaitSpare(t)
}
