package provisioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// flight counts the operations running per id and remembers the most
// ever seen at once, per id and overall.
type flight struct {
	mu      sync.Mutex
	now     map[string]int
	maxByID int
	total   int
	maxAll  int
}

func (f *flight) enter(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now[id]++
	f.total++
	f.maxByID = max(f.maxByID, f.now[id])
	f.maxAll = max(f.maxAll, f.total)
}

func (f *flight) leave(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now[id]--
	f.total--
}

// TestWorkQueueOneInFlightPerSession drives one queue from many callers
// at once, synchronous and queued, over a few sessions: no session ever
// has two operations running, while different sessions run side by side.
func TestWorkQueueOneInFlightPerSession(t *testing.T) {
	q := newWorkQueue(slog.New(slog.DiscardHandler))
	q.start(t.Context(), 4)
	f := &flight{now: map[string]int{}}
	var ran atomic.Int64
	op := func(id string) func(context.Context) error {
		return func(context.Context) error {
			f.enter(id)
			defer f.leave(id)
			ran.Add(1)
			time.Sleep(2 * time.Millisecond)
			return nil
		}
	}
	ids := []string{"a", "b", "c", "d"}
	var callers sync.WaitGroup
	for i := range 40 {
		id := ids[i%len(ids)]
		callers.Go(func() {
			if err := q.do(context.Background(), id, op(id)); err != nil {
				t.Errorf("do: %v", err)
			}
		})
		q.add(id, "test", op(id))
	}
	callers.Wait()
	q.close()
	if f.maxByID != 1 {
		t.Errorf("%d operations ran at once on one session, want 1", f.maxByID)
	}
	if f.maxAll < 2 {
		t.Errorf("at most %d operations ran at once across sessions; sessions must not wait on each other", f.maxAll)
	}
	// 40 synchronous, plus the queued ones: a session already queued is
	// queued once, so there are between 4 and 40 of those.
	if n := ran.Load(); n < 44 || n > 80 {
		t.Errorf("%d operations ran, want 44 to 80", n)
	}
}

func TestWorkQueueRetriesWithBackoff(t *testing.T) {
	q := newWorkQueue(slog.New(slog.DiscardHandler))
	q.start(t.Context(), 2)
	var mu sync.Mutex
	var at []time.Time
	done := make(chan struct{})
	q.add("s", "test", func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		at = append(at, time.Now())
		if len(at) < 3 {
			return errors.New("backend is down")
		}
		close(done)
		return nil
	})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the operation never succeeded")
	}
	q.close()
	mu.Lock()
	defer mu.Unlock()
	if len(at) != 3 {
		t.Fatalf("ran %d times, want 3", len(at))
	}
	if d := at[1].Sub(at[0]); d < retryBase {
		t.Errorf("first retry after %s, want at least %s", d, retryBase)
	}
	if d := at[2].Sub(at[1]); d < 2*retryBase {
		t.Errorf("second retry after %s, want at least %s", d, 2*retryBase)
	}
}

func TestWorkQueueCloseDropsRetries(t *testing.T) {
	q := newWorkQueue(slog.New(slog.DiscardHandler))
	q.start(t.Context(), 1)
	var n atomic.Int64
	q.add("s", "test", func(context.Context) error { n.Add(1); return fmt.Errorf("attempt %d failed", n.Load()) })
	// After the third attempt the next waits 800 ms; close must drop it.
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	q.close()
	got := n.Load()
	time.Sleep(8 * retryBase)
	if n.Load() != got {
		t.Errorf("a retry ran after close")
	}
}

func TestWorkQueueWaitEndsWithContext(t *testing.T) {
	q := newWorkQueue(slog.New(slog.DiscardHandler))
	release := make(chan struct{})
	started := make(chan struct{})
	go func() {
		_ = q.do(context.Background(), "s", func(context.Context) error { close(started); <-release; return nil })
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.do(ctx, "s", func(context.Context) error { t.Error("ran while another held the session"); return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("do = %v, want the context's deadline", err)
	}
	close(release)
	// The abandoned wait must not keep the session busy.
	ok := make(chan struct{})
	go func() { _ = q.do(context.Background(), "s", func(context.Context) error { return nil }); close(ok) }()
	select {
	case <-ok:
	case <-time.After(5 * time.Second):
		t.Fatal("the session stayed busy after an abandoned wait")
	}
}
