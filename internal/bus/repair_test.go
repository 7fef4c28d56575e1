package bus_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/internal/settings"
)

// onDisk runs the all-in-one's embedded server on dataDir, in-process, and
// calls fn with JetStream once the streams and the bucket exist.
func onDisk(t *testing.T, dataDir string, log *slog.Logger, fn func(context.Context, jetstream.JetStream, jetstream.KeyValue)) {
	t.Helper()
	cfg := bus.Config{Layout: settings.Layout{Prefix: "spawner"}, Replication: settings.Replication{Replicas: 1}}
	emb, err := bus.StartEmbedded(cfg, dataDir, false, log)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer emb.Shutdown()
	nc, err := emb.Connect(cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := testContext(t)
	kv, err := bus.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatalf("ensure: %v", err)
	}
	fn(ctx, js, kv)
}

// streamFile finds one file of a stream under the data dir.
func streamFile(t *testing.T, dataDir, stream, rel string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(bus.CredentialsDir(dataDir), "jetstream", "jetstream", "*", "streams", stream, rel))
	if len(files) != 1 {
		t.Fatalf("%s/%s: found %v", stream, rel, files)
	}
	return files[0]
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// TestCorruptSessionRecordsAreReportedAtStart corrupts the bucket's block
// file and checks that the restart says, as an error, how many records
// were lost, and still starts.
func TestCorruptSessionRecordsAreReportedAtStart(t *testing.T) {
	dir := t.TempDir()
	onDisk(t, dir, discard(), func(ctx context.Context, _ jetstream.JetStream, kv jetstream.KeyValue) {
		for i := range 5 {
			if _, err := kv.Put(ctx, fmt.Sprintf("s.session%d", i), []byte(`{"status":"ready"}`)); err != nil {
				t.Fatal(err)
			}
		}
	})
	blk := streamFile(t, dir, "KV_spawner_sessions", "msgs/1.blk")
	data, err := os.ReadFile(blk)
	if err != nil {
		t.Fatal(err)
	}
	copy(data[len(data)/2:], randomBytes(64))
	if err := os.WriteFile(blk, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	onDisk(t, dir, slog.New(slog.NewTextHandler(&logs, nil)), func(ctx context.Context, _ jetstream.JetStream, kv jetstream.KeyValue) {
		keys, _ := kv.ListKeys(ctx)
		n := 0
		for range keys.Keys() {
			n++
		}
		t.Logf("%d of 5 records survived", n)
		if n == 5 {
			t.Fatal("the corruption lost nothing; the test corrupts the wrong bytes")
		}
	})
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "SESSION RECORDS LOST") ||
		!strings.Contains(logs.String(), "s.session4") {
		t.Fatalf("the restart did not report the lost records:\n%s", logs.String())
	}
}

// TestUnreadableBucketIsReportedAtStart makes the bucket's metadata
// unreadable: the restart must still start, with an empty bucket, and say
// that every record was lost.
func TestUnreadableBucketIsReportedAtStart(t *testing.T) {
	dir := t.TempDir()
	onDisk(t, dir, discard(), func(ctx context.Context, _ jetstream.JetStream, kv jetstream.KeyValue) {
		if _, err := kv.Put(ctx, "s.one", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	})
	if err := os.WriteFile(streamFile(t, dir, "KV_spawner_sessions", "meta.inf"), randomBytes(64), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	onDisk(t, dir, slog.New(slog.NewTextHandler(&logs, nil)), func(ctx context.Context, _ jetstream.JetStream, kv jetstream.KeyValue) {
		if _, err := kv.Put(ctx, "s.two", []byte(`{}`)); err != nil {
			t.Fatalf("the recreated bucket takes no records: %v", err)
		}
	})
	if !strings.Contains(logs.String(), "SESSION RECORDS LOST") || !strings.Contains(logs.String(), "moved_to=") {
		t.Fatalf("the restart did not report the lost bucket:\n%s", logs.String())
	}
}

// TestDeletedRecordsAreNotReportedLost deletes records between two starts,
// as the registry does, and checks that the restart reports no loss.
func TestDeletedRecordsAreNotReportedLost(t *testing.T) {
	dir := t.TempDir()
	onDisk(t, dir, discard(), func(ctx context.Context, _ jetstream.JetStream, kv jetstream.KeyValue) {
		for _, k := range []string{"s.a", "s.b", "s.c"} {
			if _, err := kv.Put(ctx, k, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
	})
	onDisk(t, dir, discard(), func(ctx context.Context, _ jetstream.JetStream, kv jetstream.KeyValue) {
		_ = kv.Purge(ctx, "s.a")
		_ = kv.Delete(ctx, "s.b")
		if _, err := kv.Put(ctx, "s.c", []byte(`{"v":2}`)); err != nil {
			t.Fatal(err)
		}
	})
	var logs syncBuffer
	onDisk(t, dir, slog.New(slog.NewTextHandler(&logs, nil)), func(context.Context, jetstream.JetStream, jetstream.KeyValue) {})
	if strings.Contains(logs.String(), "LOST") {
		t.Fatalf("deleted records were reported lost:\n%s", logs.String())
	}
}
