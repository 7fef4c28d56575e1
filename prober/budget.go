package prober

import (
	"errors"
	"sync/atomic"
	"syscall"
)

// connBudget bounds the connections the prober keeps open between probes.
// Each is a file descriptor, and a process may hold only so many: with
// 30,000 sessions under a limit of 20,000, the probes past the limit
// failed with "too many open files", and the reaper ended 11,000 healthy
// sessions as unhealthy (BENCHMARKS.md, "Cost as sessions grow"). Targets
// past the budget are probed on a new connection each time, which costs a
// connect per probe and no descriptor between probes.
type connBudget struct {
	left atomic.Int64
}

// newConnBudget leaves a tenth of the descriptor limit, and one for each
// probe in flight, to everything else the process opens: NATS, listeners,
// and the new connections of the targets past the budget.
func newConnBudget(concurrency int) *connBudget {
	limit := int64(1 << 20)
	var rl syscall.Rlimit
	// Go raises the soft limit to the hard one at start; this reads it.
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < uint64(limit) {
		limit = int64(rl.Cur)
	}
	return newConnBudgetOf(limit - limit/10 - int64(concurrency))
}

func newConnBudgetOf(n int64) *connBudget {
	b := &connBudget{}
	b.left.Store(max(n, 0))
	return b
}

// take reserves room for one kept connection, or reports false. A nil
// budget has room for every connection.
func (b *connBudget) take() bool {
	if b == nil {
		return true
	}
	if b.left.Add(-1) >= 0 {
		return true
	}
	b.left.Add(1)
	return false
}

// give returns what take reserved.
func (b *connBudget) give() {
	if b != nil {
		b.left.Add(1)
	}
}

// localFailure reports whether a probe failed for want of the prober's own
// resources (descriptors, ports, buffers) rather than because of the app:
// such a probe says nothing about the session, and is not reported.
func localFailure(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
