package gateway

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spawnerhq/spawner/internal/registry"
	"github.com/spawnerhq/spawner/messages"
)

// sessionList keeps every session's record encoded as the API shows it,
// in the order GET /sessions lists them, so that a request copies bytes
// instead of encoding structs. Encoding 10,000 messages.SessionViews with
// encoding/json per request cost 20–40 ms and 130,000 allocations; a
// record is encoded once per change here, and only the heartbeat part,
// which changes with every probe, is written per request.
type sessionList struct {
	mu       sync.Mutex
	byID     map[string]*listedSession
	sorted   []*listedSession
	isSorted bool
	// bufs holds answers' buffers, *[]byte, for reuse.
	bufs sync.Pool
}

type listedSession struct {
	id        string
	createdAt time.Time
	// record is the session's JSON object without its closing brace, so
	// the heartbeat's fields can follow.
	record []byte
	// beat is the newest heartbeat's fields as last written, kept until a
	// newer heartbeat comes: formatting their times was half of what a
	// request still cost.
	beat atomic.Pointer[beatJSON]
}

type beatJSON struct {
	at   time.Time
	data []byte
}

func newSessionList() *sessionList {
	l := &sessionList{byID: map[string]*listedSession{}}
	l.bufs.New = func() any { return new([]byte) }
	return l
}

// apply follows a registry change.
func (l *sessionList) apply(c registry.Change) {
	if c.Synced {
		return
	}
	var ls *listedSession
	if !c.Deleted {
		data, err := json.Marshal(c.Session)
		if err != nil {
			return
		}
		ls = &listedSession{id: c.ID, createdAt: c.Session.CreatedAt, record: data[:len(data)-1]}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old, had := l.byID[c.ID]
	if ls == nil {
		delete(l.byID, c.ID)
	} else {
		l.byID[c.ID] = ls
	}
	if had && ls != nil && old.createdAt.Equal(ls.createdAt) && l.isSorted {
		// Same place in the order: swap it in without a re-sort. The
		// slice snapshot handed out is being read without the lock, so
		// the swap goes into a copy.
		if i := slices.Index(l.sorted, old); i >= 0 {
			sorted := slices.Clone(l.sorted)
			sorted[i] = ls
			l.sorted = sorted
			return
		}
	}
	l.isSorted = false
}

// snapshot returns the sessions in creation order; the slice is shared
// and must not be changed.
func (l *sessionList) snapshot() []*listedSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.isSorted {
		s := make([]*listedSession, 0, len(l.byID))
		for _, ls := range l.byID {
			s = append(s, ls)
		}
		slices.SortFunc(s, func(a, b *listedSession) int { return a.createdAt.Compare(b.createdAt) })
		l.sorted, l.isSorted = s, true
	}
	return l.sorted
}

// writeSessionList answers GET /sessions with what writeJSON would write
// for {"sessions": [messages.SessionView...], "count": n}; a test holds the two
// together.
func (g *Gateway) writeSessionList(w http.ResponseWriter) {
	list := g.list.snapshot()
	size := 32
	for _, ls := range list {
		size += len(ls.record) + 160
	}
	// At 10,000 sessions the answer is about 6 MB. A fresh buffer each
	// time was zeroed and then collected, so buffers are reused.
	bp := g.list.bufs.Get().(*[]byte)
	defer g.list.bufs.Put(bp)
	buf := slices.Grow((*bp)[:0], size)
	defer func() { *bp = buf[:0] }()
	buf = append(buf, `{"count":`...)
	buf = strconv.AppendInt(buf, int64(len(list)), 10)
	buf = append(buf, `,"sessions":`...)
	buf = g.appendSessions(buf, list)
	buf = append(buf, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	// With its length known the answer goes out as one body, not chunked.
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
}

// appendSessions writes list as a JSON array of SessionViews.
func (g *Gateway) appendSessions(buf []byte, list []*listedSession) []byte {
	buf = append(buf, '[')
	// One lock for all the heartbeats: taking it 10,000 times was a
	// tenth of the request.
	g.beats.mu.Lock()
	for i, ls := range list {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, ls.record...)
		if hb, ok := g.beats.beats[ls.id]; ok {
			b := ls.beat.Load()
			// A heartbeat is known by its probe's time.
			if b == nil || b.at != hb.Time {
				b = &beatJSON{at: hb.Time, data: appendHeartbeat(nil, hb)}
				ls.beat.Store(b)
			}
			buf = append(buf, b.data...)
		} else {
			buf = append(buf, unprobed...)
		}
		buf = append(buf, '}')
	}
	g.beats.mu.Unlock()
	return append(buf, ']')
}

// unprobed is what messages.SessionView adds before the first probe: every field
// present, null until there is something to say.
const unprobed = `,"probed":false,"active_connections":null,"seconds_inactive":null,"last_activity":null,"last_probe":null,"probe_error":null`

// appendHeartbeat writes the fields messages.SessionView adds, in its order.
func appendHeartbeat(buf []byte, hb messages.Heartbeat) []byte {
	buf = append(buf, `,"probed":true`...)
	if hb.OK {
		buf = append(buf, `,"active_connections":`...)
		buf = strconv.AppendInt(buf, int64(hb.ActiveConnections), 10)
		buf = append(buf, `,"seconds_inactive":`...)
		buf = strconv.AppendInt(buf, hb.SecondsInactive, 10)
		buf = append(buf, `,"last_activity":`...)
		buf = appendTime(buf, hb.Time.Add(-time.Duration(hb.SecondsInactive)*time.Second))
	} else {
		buf = append(buf, `,"active_connections":null,"seconds_inactive":null,"last_activity":null`...)
	}
	buf = append(buf, `,"last_probe":`...)
	buf = appendTime(buf, hb.Time)
	buf = append(buf, `,"probe_error":`...)
	if hb.OK {
		return append(buf, "null"...)
	}
	e, _ := json.Marshal(hb.Error)
	return append(buf, e...)
}

// appendTime writes t as time.Time's MarshalJSON does, without its
// allocation.
func appendTime(buf []byte, t time.Time) []byte {
	buf = append(buf, '"')
	buf = t.AppendFormat(buf, time.RFC3339Nano)
	return append(buf, '"')
}
