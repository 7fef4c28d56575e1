package registry_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bustest"
	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// TestDeleteMarkersExpire spawns and ends 1,000 sessions on a bucket with
// a one-second marker TTL: once it has passed, the bucket holds the live
// sessions and hardly anything else, instead of one marker per session.
func TestDeleteMarkersExpire(t *testing.T) {
	env := bustest.Run(t)
	ctx := testContext(t)
	kv, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "short_ttl", History: 1, LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(kv)
	live := session(messages.StatusReady)
	if _, err := reg.Create(ctx, live); err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		s := session(messages.StatusReady)
		if _, err := reg.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.ClaimKey(ctx, "key-"+s.ID, s.ID); err != nil {
			t.Fatal(err)
		}
		if err := reg.ReleaseKey(ctx, "key-"+s.ID, s.ID); err != nil {
			t.Fatal(err)
		}
		if err := reg.Delete(ctx, s.ID, 0); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := env.JS.Stream(ctx, "KV_short_ttl")
	if err != nil {
		t.Fatal(err)
	}
	var msgs uint64
	deadline := time.Now().Add(patience)
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msgs = info.State.Msgs
		if msgs <= 100 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if msgs > 100 {
		t.Fatalf("after 1,000 sessions ended the bucket holds %d entries, want at most 100", msgs)
	}
	if _, err := reg.Get(ctx, live.ID); err != nil {
		t.Errorf("the live session is gone: %v", err)
	}
	if n, err := reg.Count(ctx); err != nil || n != 1 {
		t.Errorf("Count = %d, %v; want 1", n, err)
	}
}
