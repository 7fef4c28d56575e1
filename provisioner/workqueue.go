package provisioner

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Retry bounds of the work queue: a failed operation runs again after
// retryBase, doubling up to retryMax, at most maxAttempts times in all.
// Reconcile finds whatever is still wrong after that, so giving up costs
// a reconcile interval, not a leak.
const (
	retryBase   = 200 * time.Millisecond
	retryMax    = 30 * time.Second
	maxAttempts = 8
)

// errNotYet asks the work queue to run an operation again later, without
// a warning: another operation settles the session first.
var errNotYet = errors.New("not yet")

// workQueue serialises what happens to one session, in the manner of
// client-go's workqueue: at most one operation per session id is in
// flight, whoever asks; queued operations run on a fixed set of workers,
// one per id at a time, and failures come back after a growing delay.
// Stops asked for on NATS wait for their turn and answer with the result
// (do); exits the backend reports and reconcile's findings are queued and
// retried (add). Spawns stay outside: a stop must be able to mark a
// creating record while its start is still under way.
type workQueue struct {
	log *slog.Logger

	mu sync.Mutex
	// busy holds the ids with an operation in flight; each waiter is
	// woken in turn when the one before it is done.
	busy map[string][]chan struct{}
	// pending is the FIFO of queued operations; queued dedupes it by id,
	// so a burst of reports about one session costs one operation.
	pending []queued
	queued  map[string]bool
	closed  bool
	wake    chan struct{}
	retries sync.WaitGroup
	workers sync.WaitGroup
	stop    chan struct{}
}

type queued struct {
	id      string
	what    string
	fn      func(context.Context) error
	attempt int
}

// newWorkQueue returns a queue whose do works at once; start runs its
// workers for queued operations, and close stops them.
func newWorkQueue(log *slog.Logger) *workQueue {
	return &workQueue{log: log, busy: map[string][]chan struct{}{}, queued: map[string]bool{},
		wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

// start runs workers that run queued operations with ctx.
func (q *workQueue) start(ctx context.Context, workers int) {
	for range max(workers, 1) {
		q.workers.Go(func() { q.work(ctx) })
	}
}

// do runs fn once no other operation on id is in flight, and returns its
// error. Waiting ends early, with ctx's error, if ctx ends.
func (q *workQueue) do(ctx context.Context, id string, fn func(context.Context) error) error {
	if err := q.acquire(ctx, id); err != nil {
		return err
	}
	defer q.release(id)
	return fn(ctx)
}

func (q *workQueue) acquire(ctx context.Context, id string) error {
	q.mu.Lock()
	waiters, inFlight := q.busy[id]
	if !inFlight {
		q.busy[id] = nil
		q.mu.Unlock()
		return nil
	}
	turn := make(chan struct{})
	q.busy[id] = append(waiters, turn)
	q.mu.Unlock()
	select {
	case <-turn:
		return nil
	case <-ctx.Done():
		q.mu.Lock()
		defer q.mu.Unlock()
		select {
		case <-turn:
			// The turn came as ctx ended; pass it on.
			q.releaseLocked(id)
		default:
			ws := q.busy[id]
			for i, w := range ws {
				if w == turn {
					q.busy[id] = append(ws[:i:i], ws[i+1:]...)
					break
				}
			}
		}
		return ctx.Err()
	}
}

func (q *workQueue) release(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.releaseLocked(id)
}

func (q *workQueue) releaseLocked(id string) {
	waiters := q.busy[id]
	if len(waiters) == 0 {
		delete(q.busy, id)
		return
	}
	q.busy[id] = waiters[1:]
	close(waiters[0])
}

// add queues fn for id unless an operation for id is already queued; what
// names it in logs. It runs on a worker, after any operation in flight on
// id, and again with backoff while it fails.
func (q *workQueue) add(id, what string, fn func(context.Context) error) {
	q.push(queued{id: id, what: what, fn: fn})
}

func (q *workQueue) push(it queued) {
	q.mu.Lock()
	if q.closed || q.queued[it.id] {
		q.mu.Unlock()
		return
	}
	q.queued[it.id] = true
	q.pending = append(q.pending, it)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *workQueue) next() (queued, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return queued{}, false
	}
	it := q.pending[0]
	q.pending = q.pending[1:]
	delete(q.queued, it.id)
	if len(q.pending) > 0 {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return it, true
}

func (q *workQueue) work(ctx context.Context) {
	for {
		it, ok := q.next()
		if !ok {
			select {
			case <-q.stop:
				return
			case <-q.wake:
				continue
			}
		}
		err := q.do(ctx, it.id, it.fn)
		if err == nil {
			continue
		}
		it.attempt++
		if it.attempt >= maxAttempts {
			q.log.Error(it.what+": giving up", "session_id", it.id, "attempts", it.attempt, "err", err)
			continue
		}
		delay := min(retryBase<<(it.attempt-1), retryMax)
		if !errors.Is(err, errNotYet) {
			q.log.Warn(it.what+": will retry", "session_id", it.id, "attempt", it.attempt, "in", delay, "err", err)
		}
		q.retries.Go(func() {
			select {
			case <-time.After(delay):
				q.push(it)
			case <-q.stop:
			}
		})
	}
}

// close finishes the queued operations, drops pending retries, and
// returns once the workers are idle.
func (q *workQueue) close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	q.mu.Unlock()
	// Let the workers run what is queued before they see stop.
	for {
		q.mu.Lock()
		n := len(q.pending)
		q.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(q.stop)
	q.retries.Wait()
	q.workers.Wait()
}
