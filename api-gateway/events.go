package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// Bounds on the event streams. Each open stream holds an ordered consumer
// on the server, so their number is capped; each replay reads at most a
// fixed number of stored events, so no request scans a whole stream.
const (
	// DefaultEventReplay is how many past events GET /events replays
	// when the request does not say.
	DefaultEventReplay = 100
	// MaxEventReplay caps the replay a request may ask for.
	MaxEventReplay = 10000
	// SessionEventWindow is how many of the newest stored events a
	// session's stream searches for that session's history.
	SessionEventWindow = 10000
	// MaxEventStreams caps the streams one gateway serves at once.
	MaxEventStreams = 1024

	eventWriteTimeout = 10 * time.Second
	// goneGrace is how long a session's stream waits for the terminated
	// event of a session whose record is already gone: the provisioner
	// deletes the record just before it publishes the event.
	goneGrace = 3 * time.Second
)

// eventQuery is one validated request for an event stream.
type eventQuery struct {
	sessionID string
	replay    int
	after     uint64
}

func (g *Gateway) handleEvents(w http.ResponseWriter, r *http.Request) {
	q, e := parseEventQuery(r)
	if e != nil {
		writeError(w, http.StatusBadRequest, e)
		return
	}
	g.serveEvents(w, r, q)
}

func (g *Gateway) handleSessionEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !messages.ValidSessionID(id) {
		writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound, "no session %q", id))
		return
	}
	q, e := parseEventQuery(r)
	if e != nil {
		writeError(w, http.StatusBadRequest, e)
		return
	}
	q.sessionID = id
	g.serveEvents(w, r, q)
}

func parseEventQuery(r *http.Request) (eventQuery, *messages.Error) {
	q := eventQuery{replay: DefaultEventReplay}
	if s := r.URL.Query().Get("replay"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > MaxEventReplay {
			return q, messages.Errorf(messages.CodeBadRequest, "replay: want 0 to %d", MaxEventReplay)
		}
		q.replay = n
	}
	// EventSource sends the id of the last event it saw when it
	// reconnects; the query parameter serves clients that cannot set it.
	last := r.Header.Get("Last-Event-ID")
	if s := r.URL.Query().Get("after"); s != "" {
		last = s
	}
	if last != "" {
		n, err := strconv.ParseUint(last, 10, 64)
		if err != nil {
			return q, messages.Errorf(messages.CodeBadRequest, "after / Last-Event-ID: want an event id from this stream")
		}
		q.after = n
	}
	return q, nil
}

// serveEvents replays stored events and then streams new ones, from one
// ordered consumer so that nothing falls between the two.
func (g *Gateway) serveEvents(w http.ResponseWriter, r *http.Request, q eventQuery) {
	if g.openStreams.Add(1) > MaxEventStreams {
		g.openStreams.Add(-1)
		writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "too many open event streams; try again later"))
		return
	}
	defer g.openStreams.Add(-1)
	g.mx.EventStreamOpened()
	defer g.mx.EventStreamClosed()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	feed, err := g.openFeed(ctx, q)
	if err != nil {
		g.log.Warn("open event stream", "err", err)
		writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "event stream: %v", err))
		return
	}
	defer feed.stop()

	live := true
	var replayed []event
	if q.sessionID != "" {
		// A session's stream must know before it answers whether there is
		// anything to show, so it reads its replay first.
		_, err := g.reg.Get(ctx, q.sessionID)
		live = err == nil
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			writeError(w, http.StatusServiceUnavailable, messages.Errorf(messages.CodeUnavailable, "%v", err))
			return
		}
		if replayed, err = feed.replay(ctx); err != nil {
			return
		}
		if !live && len(replayed) == 0 {
			if q.after > 0 {
				// The session ended and the client saw its last event; 204
				// tells EventSource to stop reconnecting.
				w.WriteHeader(http.StatusNoContent)
				return
			}
			writeError(w, http.StatusNotFound, messages.Errorf(messages.CodeNotFound,
				"no session %q among the live ones or the last %d events", q.sessionID, SessionEventWindow))
			return
		}
	}

	sse := newSSEWriter(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx would otherwise buffer the stream
	w.WriteHeader(http.StatusOK)
	if err := sse.raw("retry: 2000\n\n"); err != nil {
		return
	}
	for _, ev := range replayed {
		if err := sse.event(ev); err != nil {
			return
		}
		if ev.terminal() {
			return
		}
	}
	caughtUp := q.sessionID != ""
	if caughtUp || feed.empty {
		if err := sse.raw(": live\n\n"); err != nil {
			return
		}
		caughtUp = true
	}
	var gone <-chan time.Time
	if !live {
		gone = time.After(goneGrace)
	}
	keepalive := time.NewTicker(g.cfg.EventsKeepalive)
	defer keepalive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.closing:
			return
		case <-gone:
			return
		case <-keepalive.C:
			if err := sse.raw(": keepalive\n\n"); err != nil {
				return
			}
		case ev, ok := <-feed.events:
			if !ok {
				return
			}
			if ev.ok && (q.sessionID == "" || ev.SessionID == q.sessionID) {
				if err := sse.event(ev); err != nil {
					return
				}
				if q.sessionID != "" && ev.terminal() {
					return
				}
			}
			if !caughtUp && feed.caughtUp(ev) {
				caughtUp = true
				if err := sse.raw(": live\n\n"); err != nil {
					return
				}
			}
		}
	}
}

// event is one stored lifecycle event and its place in the stream; ok is
// false for a message that is not a valid event, which is skipped but
// still counts for catching up.
type event struct {
	messages.Event
	seq     uint64
	pending uint64
	ok      bool
}

func (e event) terminal() bool {
	return e.Type == messages.EventTerminated || e.Type == messages.EventFailed
}

// feed is an ordered consumer on the event stream, delivered on a channel.
type feed struct {
	events  chan event
	stop    func()
	lastSeq uint64 // the stream's last sequence when the feed began
	empty   bool   // nothing stored to replay
	session string
}

func (g *Gateway) openFeed(ctx context.Context, q eventQuery) (*feed, error) {
	js, err := jetstream.New(g.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	stream, err := js.Stream(ctx, g.subj.EventStream())
	if err != nil {
		return nil, fmt.Errorf("event stream %s: %w", g.subj.EventStream(), err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("event stream info: %w", err)
	}
	last := info.State.LastSeq
	window := uint64(q.replay)
	if q.sessionID != "" {
		window = SessionEventWindow
	}
	start := uint64(1)
	if last >= window {
		start = last - window + 1
	}
	if q.after > 0 && q.sessionID == "" {
		// A reconnecting client resumes after its last event, but never
		// further back than a fresh client's replay reaches.
		start = max(q.after+1, last-min(last, MaxEventReplay)+1)
	} else if q.after > 0 {
		start = max(start, q.after+1)
	}
	start = max(start, info.State.FirstSeq, 1)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    g.subj.EventSubjects(),
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("event consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("event consumer: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &feed{events: make(chan event, 64), lastSeq: last, empty: start > last || info.State.Msgs == 0, session: q.sessionID}
	f.stop = func() { cancel(); it.Stop() }
	go func() {
		defer close(f.events)
		for {
			msg, err := it.Next()
			if err != nil {
				return
			}
			ev := decodeEvent(msg)
			select {
			case f.events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return f, nil
}

func decodeEvent(msg jetstream.Msg) event {
	var ev event
	if meta, err := msg.Metadata(); err == nil {
		ev.seq, ev.pending = meta.Sequence.Stream, meta.NumPending
	}
	decoded, err := messages.DecodeEvent(msg.Data())
	ev.Event, ev.ok = decoded, err == nil
	return ev
}

// caughtUp reports whether ev is the newest event stored when the feed began.
func (f *feed) caughtUp(ev event) bool { return ev.seq >= f.lastSeq || ev.pending == 0 }

// replay reads the feed up to the point where it began and returns the
// session's events; for a session, that is at most SessionEventWindow.
func (f *feed) replay(ctx context.Context) ([]event, error) {
	var out []event
	if f.empty {
		return nil, nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case ev, ok := <-f.events:
			if !ok {
				return nil, errors.New("event feed closed")
			}
			if ev.ok && ev.SessionID == f.session {
				out = append(out, ev)
			}
			if f.caughtUp(ev) {
				return out, nil
			}
		}
	}
}

// sseWriter writes server-sent events and flushes each one, with a write
// deadline so that a client that stops reading cannot hold the stream.
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w)}
}

func (s *sseWriter) raw(text string) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
	if _, err := s.w.Write([]byte(text)); err != nil {
		return err
	}
	return s.rc.Flush()
}

// event writes one event; its JSON is re-encoded, which keeps it on one
// line whatever the publisher sent.
func (s *sseWriter) event(ev event) error {
	data, err := json.Marshal(ev.Event)
	if err != nil {
		return err
	}
	return s.raw("id: " + strconv.FormatUint(ev.seq, 10) + "\nevent: " + string(ev.Type) + "\ndata: " + string(data) + "\n\n")
}
