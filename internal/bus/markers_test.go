package bus_test

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/bustest"
)

// TestEnsureUpgradesAnOldBucket starts from a bucket as an older version
// made it: no marker TTLs, and a marker left by every session that ended.
// Ensure must give it TTLs and drop those markers, and keep the records.
func TestEnsureUpgradesAnOldBucket(t *testing.T) {
	env := bustest.Run(t)
	ctx := testContext(t)
	cfg := env.Config
	cfg.Prefix = "old"
	subj, err := cfg.Subjects()
	if err != nil {
		t.Fatal(err)
	}
	old, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: subj.SessionBucket(), History: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		key := fmt.Sprintf("s.ended%d", i)
		if _, err := old.Put(ctx, key, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		if err := old.Purge(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := old.Put(ctx, fmt.Sprintf("s.live%d", i), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}

	kv, err := bus.Ensure(ctx, env.JS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LimitMarkerTTL() != bus.MarkerTTL {
		t.Errorf("marker TTL after Ensure = %s, want %s", st.LimitMarkerTTL(), bus.MarkerTTL)
	}
	if st.Values() != 3 {
		t.Errorf("the upgraded bucket holds %d entries, want the 3 live records", st.Values())
	}
	for i := range 3 {
		if _, err := kv.Get(ctx, fmt.Sprintf("s.live%d", i)); err != nil {
			t.Errorf("live record %d lost: %v", i, err)
		}
	}
	// A purge with a TTL now works, and a second Ensure changes nothing.
	if err := kv.Purge(ctx, "s.live0", jetstream.PurgeTTL(bus.MarkerTTL)); err != nil {
		t.Fatalf("purge with a TTL on the upgraded bucket: %v", err)
	}
	if _, err := bus.Ensure(ctx, env.JS, cfg); err != nil {
		t.Fatal(err)
	}
	if st, _ := kv.Status(ctx); st.Values() != 3 {
		t.Errorf("after a second Ensure the bucket holds %d entries, want 3 (2 records, 1 fresh marker)", st.Values())
	}
}
