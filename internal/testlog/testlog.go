// Package testlog gives tests a logger that shows a component's log only
// when the test fails.
package testlog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// New returns a debug-level logger whose output is printed if t fails.
// Components log from their own goroutines, which may outlive the test by a
// moment, so the logger never calls t.Log after the test ends.
func New(t testing.TB) *slog.Logger {
	b := &buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("log:\n" + b.String())
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
