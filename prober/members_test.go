package prober

import (
	"fmt"
	"log/slog"
	"testing"
	"time"
)

func TestMembershipLapseAndGrace(t *testing.T) {
	now := time.Unix(1000, 0)
	m := newMembership(time.Second, func() time.Time { return now }, slog.New(slog.DiscardHandler))
	m.seen["b"] = now
	cur, prev, gen := m.view()
	if len(cur) != 2 || prev == nil || gen != 2 {
		t.Fatalf("after b joined: cur %v prev %v gen %d", cur, prev, gen)
	}
	// b is silent for less than the lapse (half an interval): still there.
	now = now.Add(400 * time.Millisecond)
	if cur, _, g := m.view(); len(cur) != 2 || g != gen {
		t.Fatalf("b dropped after 400ms: %v", cur)
	}
	// Past the lapse, b is gone, and this replica alone remains.
	now = now.Add(200 * time.Millisecond)
	cur, prev, gen = m.view()
	if len(cur) != 1 || cur[0] != m.self || len(prev) != 2 || gen != 3 {
		t.Fatalf("after b's lapse: cur %v prev %v gen %d", cur, prev, gen)
	}
	// The old view counts for one interval (the handover grace), then not.
	now = now.Add(1100 * time.Millisecond)
	if _, prev, _ := m.view(); prev != nil {
		t.Fatalf("the old view still counts after the grace: %v", prev)
	}
}

func TestOwnerMovesOnlyTheLeaversShare(t *testing.T) {
	three := []string{"a", "b", "c"}
	two := []string{"a", "b"}
	counts := map[string]int{}
	moved := 0
	const n = 3000
	for i := range n {
		id := fmt.Sprintf("session-%d", i)
		o3, o2 := owner(three, id), owner(two, id)
		counts[o3]++
		if o3 != "c" && o3 != o2 {
			moved++
		}
	}
	if moved != 0 {
		t.Errorf("%d sessions of the replicas that stayed changed owner", moved)
	}
	for _, mem := range three {
		if c := counts[mem]; c < n/3-n/10 || c > n/3+n/10 {
			t.Errorf("%s owns %d of %d sessions, want about a third", mem, c, n)
		}
	}
	if owner(nil, "x") != "" {
		t.Error("an empty member list has an owner")
	}
}
