package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spawnerhq/spawner/messages"
)

// maxEventLine bounds one line of an event stream; events are small.
const maxEventLine = 1 << 20

// EventsOptions selects an event stream.
type EventsOptions struct {
	// SessionID follows one session, whose stream ends after its terminated
	// or failed event; empty follows every session until Close.
	SessionID string
	// Replay is how many stored events the all-sessions stream replays
	// first; 0 means the server's default (100).
	Replay int
	// NoReplay streams only new events.
	NoReplay bool
	// After resumes after the event with this id, as from LastID.
	After uint64
	// UntilLive ends the stream (Next returns io.EOF) once the stored
	// events are delivered, for printing history without following.
	UntilLive bool
}

// EventStream is an open stream of lifecycle events.
type EventStream struct {
	body      io.ReadCloser
	sse       *sseReader
	lastID    string
	live      bool
	untilLive bool
}

// Events opens an event stream: stored events first, then new ones. It
// returns once the server has answered, so errors such as an unknown
// session come from here rather than from Next.
func (c *Client) Events(ctx context.Context, opts EventsOptions) (*EventStream, error) {
	path := "/events"
	if opts.SessionID != "" {
		if err := checkID(opts.SessionID); err != nil {
			return nil, err
		}
		path = "/sessions/" + opts.SessionID + "/events"
	}
	q := url.Values{}
	switch {
	case opts.NoReplay:
		q.Set("replay", "0")
	case opts.Replay > 0:
		q.Set("replay", strconv.Itoa(opts.Replay))
	}
	if opts.After > 0 {
		q.Set("after", strconv.FormatUint(opts.After, 10))
	}
	req, err := c.newRequest(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode == http.StatusNoContent {
		resp.Body.Close()
		return &EventStream{body: http.NoBody, sse: newSSEReader(http.NoBody), live: true}, nil
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, decodeError(resp.StatusCode, data)
	}
	return &EventStream{body: resp.Body, sse: newSSEReader(resp.Body), untilLive: opts.UntilLive}, nil
}

// Next returns the next event. It returns io.EOF when the server ended the
// stream, and the context's error once the context of Events is done.
func (s *EventStream) Next() (messages.Event, error) {
	for {
		f, err := s.sse.next()
		if err != nil {
			return messages.Event{}, err
		}
		if f.comment == "live" {
			s.live = true
			if s.untilLive {
				return messages.Event{}, io.EOF
			}
		}
		if f.data == "" {
			continue
		}
		if f.id != "" {
			s.lastID = f.id
		}
		var ev messages.Event
		if err := json.Unmarshal([]byte(f.data), &ev); err != nil {
			return messages.Event{}, fmt.Errorf("event %s: undecodable data: %w", f.id, err)
		}
		return ev, nil
	}
}

// LastID is the id of the newest event returned, for EventsOptions.After.
func (s *EventStream) LastID() string { return s.lastID }

// Live reports whether the replay of stored events is over, so that what
// Next returns from now on is happening now.
func (s *EventStream) Live() bool { return s.live }

// Close ends the stream.
func (s *EventStream) Close() error { return s.body.Close() }

// sseFrame is one dispatched block of a server-sent event stream.
type sseFrame struct {
	id, event, data string
	// comment is the text of the block's last comment line, trimmed.
	comment string
}

// sseReader parses the text/event-stream format of the HTML standard.
type sseReader struct {
	r *bufio.Reader
	// pending holds the lines after a lone CR, which the standard counts
	// as a line end as much as LF and CRLF are.
	pending []string
}

func newSSEReader(r io.Reader) *sseReader { return &sseReader{r: bufio.NewReaderSize(r, 16<<10)} }

func (p *sseReader) line() (string, error) {
	if len(p.pending) > 0 {
		l := p.pending[0]
		p.pending = p.pending[1:]
		return l, nil
	}
	var buf []byte
	for {
		chunk, err := p.r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxEventLine {
			return "", fmt.Errorf("event stream line over %d bytes", maxEventLine)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				// A last line without its end is not a complete event.
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		buf = bytes.TrimSuffix(buf[:len(buf)-1], []byte("\r"))
		lines := strings.Split(string(buf), "\r")
		p.pending = lines[1:]
		return lines[0], nil
	}
}

func (p *sseReader) next() (sseFrame, error) {
	var f sseFrame
	var data strings.Builder
	seen := false
	for {
		line, err := p.line()
		if err != nil {
			return sseFrame{}, err
		}
		if line == "" {
			if seen {
				f.data = strings.TrimSuffix(data.String(), "\n")
				return f, nil
			}
			continue
		}
		seen = true
		field, value, found := strings.Cut(line, ":")
		if !found {
			value = ""
		}
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			f.comment = strings.TrimSpace(value)
		case "event":
			f.event = value
		case "data":
			if data.Len()+len(value) > maxEventLine {
				return sseFrame{}, fmt.Errorf("event over %d bytes", maxEventLine)
			}
			data.WriteString(value)
			data.WriteByte('\n')
		case "id":
			if !strings.ContainsRune(value, 0) {
				f.id = value
			}
		}
	}
}
