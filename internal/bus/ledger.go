package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The embedded server recovers a corrupt block file by cutting it at the
// first bad message, and says nothing: in a test, 64 random bytes in the
// bucket's block file took 3 of 5 records with no error and no "lost" in
// the stream's state. So the embedded server keeps a ledger of the
// bucket's keys and revisions (never values) beside its files, written at
// start and at shutdown, and at start compares it with what JetStream
// recovered: a key that is gone, or older than the ledger says, was lost.

// ledger is the bucket's keys and their revisions at one moment.
type ledger struct {
	Time time.Time         `json:"time"`
	Keys map[string]uint64 `json:"keys"`
}

func ledgerFile(storeDir, bucket string) string {
	return filepath.Join(storeDir, bucket+".ledger.json")
}

// bucketKeys reads every key's revision, headers only.
func bucketKeys(ctx context.Context, nc *nats.Conn, bucket string) (map[string]uint64, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return map[string]uint64{}, nil
	}
	if err != nil {
		return nil, err
	}
	// Deletes count: a purged key keeps its marker, at a newer revision,
	// so a key the registry removed is never taken for a lost one.
	w, err := kv.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	keys := map[string]uint64{}
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return keys, nil
			}
			keys[e.Key()] = e.Revision()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// checkLedger reports what the bucket lost since the ledger was written,
// then writes the ledger anew.
func (e *Embedded) checkLedger(log *slog.Logger) error {
	if e.storeDir == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now, err := e.snapshotKeys(ctx, log)
	if err != nil {
		return fmt.Errorf("session bucket ledger: %w", err)
	}
	data, err := os.ReadFile(ledgerFile(e.storeDir, e.bucket))
	var old ledger
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("session bucket ledger: %w", err)
	case json.Unmarshal(data, &old) != nil:
		log.Warn("session bucket ledger unreadable: cannot tell whether records were lost", "file", ledgerFile(e.storeDir, e.bucket))
	default:
		var lost []string
		for k, rev := range old.Keys {
			if now[k] < rev {
				lost = append(lost, k)
			}
		}
		if len(lost) > 0 {
			slices.Sort(lost)
			log.Error("SESSION RECORDS LOST: the session bucket came back from disk without records it had "+
				"(corruption, or a crash before they reached the disk); these are gone or older than they were, "+
				"their sessions are no longer tracked correctly and their apps may still run and need stopping "+
				"by hand", "lost_records", len(lost), "keys", shortList(lost),
				"ledger_time", old.Time.Format(time.RFC3339))
		}
	}
	return e.writeLedger(now)
}

// saveLedger records the bucket's keys before the server stops.
func (e *Embedded) saveLedger(log *slog.Logger) {
	if e.storeDir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := e.snapshotKeys(ctx, log)
	if err == nil {
		err = e.writeLedger(keys)
	}
	if err != nil {
		log.Warn("session bucket ledger not saved", "err", err)
	}
}

func (e *Embedded) snapshotKeys(ctx context.Context, log *slog.Logger) (map[string]uint64, error) {
	nc, err := connect(e.cfg, e.role, "spawner-ledger", e.Server, log, e.inProcess)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	return bucketKeys(ctx, nc, e.bucket)
}

func (e *Embedded) writeLedger(keys map[string]uint64) error {
	data, err := json.Marshal(ledger{Time: time.Now().UTC(), Keys: keys})
	if err != nil {
		return err
	}
	path := ledgerFile(e.storeDir, e.bucket)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// shortList shows at most 20 names, so one log line stays readable.
func shortList(names []string) string {
	if len(names) <= 20 {
		return strings.Join(names, ",")
	}
	return strings.Join(names[:20], ",") + fmt.Sprintf(" and %d more", len(names)-20)
}
