package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/messages"
)

// MembersBucket is the KV bucket in which the prober replicas announce
// themselves, so that they split the sessions between them.
func MembersBucket(subj messages.Subjects) string { return subj.StateName("probers") }

// membersMaxAge drops the keys of probers that died without a word. The
// probers judge liveness by when they last saw a key written, not by this.
const membersMaxAge = 10 * time.Minute

// EnsureMembers creates or updates the probers' membership bucket. It is
// kept in memory: membership is rebuilt within a second by the live
// probers, so nothing in it is worth a disk write.
func EnsureMembers(ctx context.Context, js jetstream.JetStream, subj messages.Subjects, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      MembersBucket(subj),
		Description: "Spawner prober replicas",
		History:     1,
		TTL:         membersMaxAge,
		Storage:     jetstream.MemoryStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", MembersBucket(subj), err)
	}
	return kv, nil
}
