package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MarkerTTL is how long the session bucket keeps the marker a purge leaves.
// A watch sees a delete as it happens, so the marker only has to outlast a
// watcher's reconnect; after it the server drops it, and the bucket holds
// the live sessions plus the last minute's ends, never the whole history.
const MarkerTTL = time.Minute

// sessionBucket creates the session bucket, or upgrades one made by an
// older version: that bucket had no marker TTLs, so every purge it ever
// took left a marker for good. Those are dropped once, here, before the
// bucket gains TTLs, so a failed drop is retried at the next start. On a
// server without marker TTLs (before NATS 2.11) they are dropped at every
// start instead.
func sessionBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.LimitMarkerTTL = MarkerTTL
	old, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, err
	}
	if old != nil {
		st, err := old.Status(ctx)
		if err != nil {
			return nil, err
		}
		if st.LimitMarkerTTL() == 0 {
			if err := dropMarkers(ctx, js, old, "KV_"+cfg.Bucket); err != nil {
				return nil, fmt.Errorf("drop old delete markers: %w", err)
			}
		}
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		// NATS 2.10 has no marker TTLs. The bucket then keeps its markers
		// until the next start, which drops them as for an old bucket.
		cfg.LimitMarkerTTL = 0
		return js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	return kv, err
}

// dropMarkers removes every delete and purge marker of kv. Each subject is
// purged only up to its marker's sequence, so a key written again since
// the scan keeps its new value. The purges run a few at a time: one by one,
// 100,000 markers took minutes.
func dropMarkers(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, stream string) error {
	w, err := kv.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		return err
	}
	type marker struct {
		key string
		seq uint64
	}
	var markers []marker
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if e.Operation() != jetstream.KeyValuePut {
			markers = append(markers, marker{e.Key(), e.Revision()})
		}
	}
	_ = w.Stop()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(markers) == 0 {
		return nil
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	work := make(chan marker)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for m := range work {
				err := s.Purge(ctx, jetstream.WithPurgeSubject("$KV."+kv.Bucket()+"."+m.key), jetstream.WithPurgeSequence(m.seq+1))
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for _, m := range markers {
		if ctx.Err() != nil {
			break
		}
		work <- m
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return ctx.Err()
	}
}
