// Package testrun runs a component for the length of a test.
package testrun

import (
	"context"
	"testing"
	"time"
)

// Background runs fn in a goroutine until the test ends, then cancels its
// context and fails the test if fn returns an error or does not return
// within patience.
func Background(t testing.TB, patience time.Duration, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(patience):
			t.Error("Run did not return after cancel")
		}
	})
}
