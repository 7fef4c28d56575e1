package bus

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// repairStore runs right after the embedded server has recovered its files
// from storeDir, before any component connects, and deals with what the
// server could not read:
//
//   - A consumer whose state is unreadable is skipped by the server, but its
//     directory stays, so creating it again fails with "error creating store
//     for consumer" on every start, forever. Its state is only a position in
//     a stream, which the consumer rebuilds, so the directory is deleted and
//     the consumer is recreated by whoever uses it, with a warning.
//   - A stream whose files are unreadable is skipped too. Its directory is
//     moved aside (kept for a post-mortem) so that it can be created afresh;
//     for the session bucket that means every record is gone, which is
//     logged as an error.
//   - A stream that lost messages to corruption while recovering says so in
//     its state; for the session bucket those are session records, and the
//     loss is logged as an error with how much was lost.
func repairStore(srv *server.Server, storeDir string, log *slog.Logger) error {
	if storeDir == "" {
		return nil
	}
	info, err := srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true, Limit: 1 << 16})
	if err != nil {
		return fmt.Errorf("jetstream state: %w", err)
	}
	loaded := map[string]map[string]bool{} // account/stream -> consumers
	for _, acc := range info.AccountDetails {
		for _, sd := range acc.Streams {
			cons := map[string]bool{}
			for _, ci := range sd.Consumer {
				cons[ci.Name] = true
			}
			loaded[acc.Name+"/"+sd.Name] = cons
			if lost := sd.State.Lost; lost != nil && (len(lost.Msgs) > 0 || lost.Bytes > 0) {
				logLoss(log, sd.Name, lost)
			}
		}
	}
	// The server keeps its files in a "jetstream" dir under its StoreDir.
	root := filepath.Join(storeDir, "jetstream", "jetstream")
	accounts, _ := os.ReadDir(root)
	for _, acc := range accounts {
		streamsDir := filepath.Join(root, acc.Name(), "streams")
		streams, _ := os.ReadDir(streamsDir)
		for _, st := range streams {
			dir := filepath.Join(streamsDir, st.Name())
			cons, ok := loaded[acc.Name()+"/"+st.Name()]
			if !ok {
				if err := moveStreamAside(storeDir, acc.Name(), st.Name(), dir, log); err != nil {
					return err
				}
				continue
			}
			obs, _ := os.ReadDir(filepath.Join(dir, "obs"))
			for _, o := range obs {
				if cons[o.Name()] {
					continue
				}
				if err := os.RemoveAll(filepath.Join(dir, "obs", o.Name())); err != nil {
					return fmt.Errorf("remove unreadable consumer %s > %s: %w", st.Name(), o.Name(), err)
				}
				log.Warn("jetstream consumer state was unreadable: deleted it, it is recreated from its stream",
					"stream", st.Name(), "consumer", o.Name())
			}
		}
	}
	return nil
}

func logLoss(log *slog.Logger, stream string, lost *server.LostStreamData) {
	if strings.HasPrefix(stream, "KV_") {
		log.Error("SESSION RECORDS LOST: the session bucket was corrupt on disk; sessions whose records were "+
			"lost are no longer tracked, their apps may still run and must be stopped by hand",
			"stream", stream, "lost_records", len(lost.Msgs), "lost_bytes", lost.Bytes)
		return
	}
	log.Warn("jetstream stream lost messages to corruption on disk",
		"stream", stream, "lost_messages", len(lost.Msgs), "lost_bytes", lost.Bytes)
}

func moveStreamAside(storeDir, account, stream, dir string, log *slog.Logger) error {
	aside := filepath.Join(storeDir, "corrupt", fmt.Sprintf("%s-%s-%s", account, stream, time.Now().UTC().Format("20060102T150405Z")))
	if err := os.MkdirAll(filepath.Dir(aside), 0o700); err != nil {
		return fmt.Errorf("move unreadable stream %s aside: %w", stream, err)
	}
	if err := os.Rename(dir, aside); err != nil {
		return fmt.Errorf("move unreadable stream %s aside: %w", stream, err)
	}
	if strings.HasPrefix(stream, "KV_") {
		log.Error("SESSION RECORDS LOST: the session bucket could not be read at all; it starts empty, every "+
			"session it tracked is forgotten, and their apps may still run and must be stopped by hand",
			"stream", stream, "moved_to", aside)
		return nil
	}
	log.Warn("jetstream stream was unreadable: moved it aside, it is created afresh",
		"stream", stream, "moved_to", aside)
	return nil
}
