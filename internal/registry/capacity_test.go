package registry_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// Sixty racing reservations against a limit of three: exactly three win.
func TestReserveIsExactUnderConcurrency(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []string
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := messages.NewSessionID()
			err := reg.Reserve(ctx, id, 3)
			if err != nil && !errors.Is(err, registry.ErrFull) {
				t.Error(err)
			}
			if err == nil {
				mu.Lock()
				won = append(won, id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(won) != 3 {
		t.Fatalf("%d reservations won against a limit of 3", len(won))
	}
	// Releasing one frees exactly one slot, and a release of an id that
	// holds none, or twice, frees nothing.
	for _, id := range []string{won[0], won[0], messages.NewSessionID()} {
		if err := reg.Release(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.Reserve(ctx, "a", 3); err != nil {
		t.Fatalf("reserve after a release: %v", err)
	}
	if err := reg.Reserve(ctx, "b", 3); !errors.Is(err, registry.ErrFull) {
		t.Fatalf("fourth reservation: %v, want ErrFull", err)
	}
	res, err := reg.Reservations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Errorf("%d reservations listed, want 3: %+v", len(res), res)
	}
}

// A lowered limit counts the slots still taken above it.
func TestReserveCountsSlotsAboveALoweredLimit(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	for _, id := range []string{"a", "b", "c"} {
		if err := reg.Reserve(ctx, id, 5); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Reserve(ctx, "d", 2); !errors.Is(err, registry.ErrFull) {
		t.Fatalf("reserve with 2 slots of a former limit of 5 taken: %v, want ErrFull", err)
	}
}

// The sweep frees slots whose session has no record, and only those.
func TestSweepReservations(t *testing.T) {
	reg, _ := newRegistry(t)
	ctx := testContext(t)
	live := session(messages.StatusReady)
	if _, err := reg.Create(ctx, live); err != nil {
		t.Fatal(err)
	}
	lost := messages.NewSessionID()
	for _, id := range []string{live.ID, lost} {
		if err := reg.Reserve(ctx, id, 2); err != nil {
			t.Fatal(err)
		}
	}
	if freed, err := reg.SweepReservations(ctx, patience); err != nil || len(freed) != 0 {
		t.Fatalf("sweep within the grace freed %v, %v", freed, err)
	}
	freed, err := reg.SweepReservations(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(freed) != 1 || freed[0] != lost {
		t.Fatalf("sweep freed %v, want only %s", freed, lost)
	}
	if err := reg.Reserve(ctx, messages.NewSessionID(), 2); err != nil {
		t.Fatalf("reserve after the sweep: %v", err)
	}
}
