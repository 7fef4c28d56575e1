package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// The wire protocol, all JSON text messages:
//
//	client → server  {"type":"text","text":"…","version":N}  N is the version the edit was based on
//	client → server  {"type":"chat","text":"…"}
//	server → client  {"type":"hello","name":"guest 3"}        the name others see in chat
//	server → client  {"type":"text","text":"…","version":N}  the whole note, on join and on others' edits
//	server → client  {"type":"ack","version":N}               the sender's own edit became version N
//	server → client  {"type":"presence","count":N}
//	server → client  {"type":"chat","from":"…","text":"…","time":"…"}
//
// Edits are last-writer-wins on the whole text. The sender gets an ack
// instead of an echo so that a slow echo never overwrites newer typing.

const (
	// sendBuffer is how far a client may fall behind before it is dropped;
	// it must hold a join's burst: hello, note, chat history and presence.
	sendBuffer = 64
	// chatHistory is how many chat lines a newcomer is shown.
	chatHistory = 30
	// maxChatRunes keeps one chat line from flooding everyone's log.
	maxChatRunes = 2000
)

type inbound struct {
	Type    string `json:"type"`
	Text    string `json:"text"`
	Version int64  `json:"version"`
}

type textMsg struct {
	Type    string `json:"type"`
	Text    string `json:"text"`
	Version int64  `json:"version"`
}

type ackMsg struct {
	Type    string `json:"type"`
	Version int64  `json:"version"`
}

type presenceMsg struct {
	Type  string `json:"type"`
	Count int    `json:"count"`
}

type helloMsg struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

type chatMsg struct {
	Type string    `json:"type"`
	From string    `json:"from"`
	Text string    `json:"text"`
	Time time.Time `json:"time"`
}

// encode marshals a message whose types cannot fail to encode.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("demo: encode %T: %v", v, err))
	}
	return b
}

// closeCause carries the close frame a kicked client should be sent.
type closeCause struct {
	code   websocket.StatusCode
	reason string
}

func (c closeCause) Error() string { return c.reason }

// client is one connected WebSocket. Everything sent to it goes through
// send so that a single goroutine owns writes and broadcasting never
// blocks on a slow peer.
type client struct {
	name   string
	send   chan []byte
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newClient() *client {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &client{send: make(chan []byte, sendBuffer), ctx: ctx, cancel: cancel}
}

// kick asks the writer to close the connection; the first reason wins.
func (c *client) kick(code websocket.StatusCode, reason string) {
	c.cancel(closeCause{code: code, reason: reason})
}

func (c *client) closeReason() (websocket.StatusCode, string) {
	if cc, ok := context.Cause(c.ctx).(closeCause); ok {
		return cc.code, cc.reason
	}
	return websocket.StatusNormalClosure, ""
}

// hub holds the note and the set of clients, and is the only place that
// knows whether the session is in use.
type hub struct {
	clock func() time.Time
	log   *slog.Logger

	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool
	guests  int
	text    string
	version int64
	chat    [][]byte
	// idleSince is when the last connection closed, or start-up if none
	// ever opened; meaningful only while clients is empty.
	idleSince time.Time
}

func newHub(clock func() time.Time, log *slog.Logger) *hub {
	return &hub{clock: clock, log: log, clients: map[*client]struct{}{}, idleSince: clock()}
}

// status returns the open connections and how long there have been none.
func (h *hub) status() (int, time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.clients); n > 0 {
		return n, 0
	}
	return 0, max(h.clock().Sub(h.idleSince), 0)
}

// enqueue must be called with mu held, so every client sees messages in
// the same order the hub applied them.
func (h *hub) enqueue(c *client, msg []byte) {
	select {
	case c.send <- msg:
	default:
		// Dropping a laggard is safe: on reconnect it gets the whole note.
		c.kick(websocket.StatusPolicyViolation, "too slow")
	}
}

func (h *hub) broadcastLocked(msg []byte, except *client) {
	for c := range h.clients {
		if c != except {
			h.enqueue(c, msg)
		}
	}
}

func (h *hub) join(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		c.kick(websocket.StatusGoingAway, "shutting down")
		return
	}
	h.guests++
	c.name = fmt.Sprintf("guest %d", h.guests)
	h.clients[c] = struct{}{}
	h.enqueue(c, encode(helloMsg{Type: "hello", Name: c.name}))
	h.enqueue(c, encode(textMsg{Type: "text", Text: h.text, Version: h.version}))
	for _, m := range h.chat {
		h.enqueue(c, m)
	}
	h.broadcastLocked(encode(presenceMsg{Type: "presence", Count: len(h.clients)}), nil)
	h.log.Debug("client joined", "name", c.name, "clients", len(h.clients))
}

func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c]; !ok {
		return
	}
	delete(h.clients, c)
	if len(h.clients) == 0 {
		h.idleSince = h.clock()
	}
	h.broadcastLocked(encode(presenceMsg{Type: "presence", Count: len(h.clients)}), nil)
	h.log.Debug("client left", "name", c.name, "clients", len(h.clients))
}

func (h *hub) edit(c *client, text string, base int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if base != h.version {
		// Not an error: last writer wins, but it is worth seeing in logs
		// when two people type at once.
		h.log.Debug("edit overwrote a concurrent one", "name", c.name, "base", base, "version", h.version)
	}
	h.version++
	h.text = text
	h.broadcastLocked(encode(textMsg{Type: "text", Text: text, Version: h.version}), c)
	h.enqueue(c, encode(ackMsg{Type: "ack", Version: h.version}))
}

func (h *hub) say(c *client, text string) {
	text = strings.TrimSpace(text)
	if text == "" {
		return
	}
	if utf8.RuneCountInString(text) > maxChatRunes {
		text = string([]rune(text)[:maxChatRunes])
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	msg := encode(chatMsg{Type: "chat", From: c.name, Text: text, Time: h.clock().UTC()})
	h.chat = append(h.chat, msg)
	if len(h.chat) > chatHistory {
		h.chat = append(h.chat[:0:0], h.chat[len(h.chat)-chatHistory:]...)
	}
	h.broadcastLocked(msg, nil)
}

// closeAll tells every client the server is going away and refuses
// newcomers, for graceful shutdown.
func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for c := range h.clients {
		c.kick(websocket.StatusGoingAway, "shutting down")
	}
}
