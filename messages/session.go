package messages

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Status is where a session is in its life.
type Status string

// The statuses of a session record. A record is deleted when the session
// ends, so "terminated" only appears in events and API answers.
const (
	StatusCreating   Status = "creating"
	StatusReady      Status = "ready"
	StatusStopping   Status = "stopping"
	StatusTerminated Status = "terminated"
)

// Reason says why a session ended or failed.
type Reason string

// The reasons a session ends.
const (
	ReasonIdle      Reason = "idle"
	ReasonLifetime  Reason = "lifetime"
	ReasonDeleted   Reason = "deleted"
	ReasonExited    Reason = "exited"
	ReasonFailed    Reason = "failed"
	ReasonOrphaned  Reason = "orphaned"
	ReasonLost      Reason = "lost"
	ReasonUnhealthy Reason = "unhealthy"
	ReasonShutdown  Reason = "shutdown"
)

// Session is the registry's record of one session, the single truth about
// it. Env is deliberately absent: it may hold secrets.
type Session struct {
	ID string `json:"session_id"`
	// App names the catalog app the session runs.
	App       string            `json:"app,omitempty"`
	Key       string            `json:"key,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
	Status    Status            `json:"status"`
	URL       string            `json:"url"`
	Labels    map[string]string `json:"labels,omitempty"`
	Backend   string            `json:"backend"`
	// Pool names the pool whose provisioner started the session; empty is
	// the default pool.
	Pool string `json:"pool,omitempty"`
	// Upstream is the host:port the proxy forwards to, set once ready.
	Upstream string `json:"upstream,omitempty"`
	// StatusURL is what the prober polls: the app's /status or a sidecar's.
	StatusURL string `json:"status_url,omitempty"`
	// Routing is the session's routing mode when its app sets one; empty
	// is the installation's. Only path and path-keep mix in one
	// installation, as both address sessions by /p/<id>/.
	Routing Routing `json:"routing,omitempty"`
	// ProxyActivity says the gateway's view of the session's traffic is
	// one of its activity sources (SPAWNER_STATUS_SOURCE includes proxy).
	ProxyActivity bool `json:"proxy_activity,omitempty"`
	// Owner names the provisioner that started the session.
	Owner string `json:"owner,omitempty"`
	// TokenHash is the SHA-256 of the session's access token, when there is one.
	TokenHash          string    `json:"token_hash,omitempty"`
	IdleTimeoutSeconds int64     `json:"idle_timeout_seconds"`
	MaxLifetimeSeconds int64     `json:"max_lifetime_seconds,omitempty"`
	CreatedAt          time.Time `json:"created_at"`
	ReadyAt            time.Time `json:"ready_at,omitzero"`
	StoppingAt         time.Time `json:"stopping_at,omitzero"`
	// Pooled marks a warm-pool session that no client holds yet; it is
	// never reaped while pooled.
	Pooled bool `json:"pooled,omitempty"`
	// ClaimedAt is when a warm-pool session was handed to a client; idle
	// time counts from then.
	ClaimedAt  time.Time `json:"claimed_at,omitzero"`
	StopReason Reason    `json:"stop_reason,omitempty"`
}

// Live reports whether the session is serving or about to.
func (s Session) Live() bool { return s.Status == StatusCreating || s.Status == StatusReady }

// EventType names a lifecycle event; the subject is "<prefix>.session.<type>".
type EventType string

// The lifecycle events, in the order a session sees them.
const (
	EventRequested  EventType = "requested"
	EventCreating   EventType = "creating"
	EventReady      EventType = "ready"
	EventFailed     EventType = "failed"
	EventStopping   EventType = "stopping"
	EventTerminated EventType = "terminated"
)

// EventTypes lists every event type.
var EventTypes = []EventType{EventRequested, EventCreating, EventReady, EventFailed, EventStopping, EventTerminated}

// Event is a lifecycle event. One shape serves every type so that a single
// subscriber to "<prefix>.session.>" can decode all of them.
type Event struct {
	Type      EventType `json:"type"`
	SessionID string    `json:"session_id"`
	Time      time.Time `json:"time"`
	// App names the catalog app of the session.
	App       string `json:"app,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	Key       string `json:"key,omitempty"`
	URL       string `json:"url,omitempty"`
	Upstream  string `json:"upstream,omitempty"`
	Backend   string `json:"backend,omitempty"`
	Owner     string `json:"owner,omitempty"`
	// Pool names the session's pool; empty is the default pool.
	Pool   string            `json:"pool,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	Reason Reason            `json:"reason,omitempty"`
	Error  string            `json:"error,omitempty"`
	// SpawnSeconds is how long the spawn took, on ready and failed.
	SpawnSeconds float64 `json:"spawn_seconds,omitempty"`
	// LifetimeSeconds is how long the session lived, on terminated.
	LifetimeSeconds float64 `json:"lifetime_seconds,omitempty"`
}

// AppStatus is the seed's /status document, served by apps and by the sidecar.
type AppStatus struct {
	ActiveConnections int   `json:"active_connections"`
	SecondsInactive   int64 `json:"seconds_inactive"`
	Listening         bool  `json:"listening"`
}

// Heartbeat is what the prober learned of one session at one time.
type Heartbeat struct {
	SessionID string    `json:"session_id"`
	Time      time.Time `json:"time"`
	// OK is false when the probe failed; Error then says how.
	OK                bool   `json:"ok"`
	Error             string `json:"error,omitempty"`
	ActiveConnections int    `json:"active_connections"`
	SecondsInactive   int64  `json:"seconds_inactive"`
	Listening         bool   `json:"listening"`
	// FailingSince is the time of the first failure in the current run of
	// failed probes, so any reaper replica can apply the grace period.
	FailingSince time.Time `json:"failing_since,omitzero"`
	// LatencySeconds is how long the probe took.
	LatencySeconds float64 `json:"latency_seconds,omitempty"`
}

// idEncoding is lowercase base32 without padding, so IDs are valid in URLs,
// NATS subjects, KV keys and DNS labels.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

var idPattern = regexp.MustCompile(`^[a-z2-7]{26}$`)

// NewSessionID returns 128 random bits as 26 lowercase base32 characters.
func NewSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
	return idEncoding.EncodeToString(b[:])
}

// ValidSessionID reports whether id has the shape NewSessionID produces, so
// garbage is rejected before any lookup.
func ValidSessionID(id string) bool { return len(id) == 26 && idPattern.MatchString(id) }

// MaxStatusBytes bounds a /status answer; apps may return anything.
const MaxStatusBytes = 64 << 10

// DecodeAppStatus reads a /status document of at most MaxStatusBytes.
// Unknown fields are allowed, because apps add their own.
func DecodeAppStatus(r io.Reader) (AppStatus, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxStatusBytes+1))
	if err != nil {
		return AppStatus{}, fmt.Errorf("read /status: %w", err)
	}
	if len(data) > MaxStatusBytes {
		return AppStatus{}, fmt.Errorf("/status is over %d bytes", MaxStatusBytes)
	}
	var st AppStatus
	if err := json.Unmarshal(data, &st); err != nil {
		return AppStatus{}, fmt.Errorf("/status is not the expected JSON: %w", err)
	}
	if st.ActiveConnections < 0 || st.SecondsInactive < 0 {
		return AppStatus{}, errors.New("/status has negative counts")
	}
	return st, nil
}

// MaxEventBytes bounds an event or heartbeat on the bus; real ones are a
// few hundred bytes.
const MaxEventBytes = 64 << 10

// DecodeHeartbeat parses a heartbeat and checks its session id, so that a
// stray message on a heartbeat subject is rejected rather than acted on.
func DecodeHeartbeat(data []byte) (Heartbeat, error) {
	var hb Heartbeat
	if len(data) > MaxEventBytes {
		return Heartbeat{}, fmt.Errorf("heartbeat is over %d bytes", MaxEventBytes)
	}
	if err := json.Unmarshal(data, &hb); err != nil {
		return Heartbeat{}, fmt.Errorf("heartbeat: %w", err)
	}
	if !ValidSessionID(hb.SessionID) {
		return Heartbeat{}, fmt.Errorf("heartbeat: session id %q is not valid", hb.SessionID)
	}
	if hb.ActiveConnections < 0 || hb.SecondsInactive < 0 {
		return Heartbeat{}, errors.New("heartbeat: negative counts")
	}
	return hb, nil
}

// DecodeEvent parses a lifecycle event and checks its type and session id.
func DecodeEvent(data []byte) (Event, error) {
	var ev Event
	if len(data) > MaxEventBytes {
		return Event{}, fmt.Errorf("event is over %d bytes", MaxEventBytes)
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return Event{}, fmt.Errorf("event: %w", err)
	}
	if !ValidSessionID(ev.SessionID) {
		return Event{}, fmt.Errorf("event: session id %q is not valid", ev.SessionID)
	}
	if !slices.Contains(EventTypes, ev.Type) {
		return Event{}, fmt.Errorf("event: unknown type %q", ev.Type)
	}
	return ev, nil
}

// PoolInfo is a provisioner's answer on "<prefix>.control.pools": the pool
// it serves and the labels that placement matches.
type PoolInfo struct {
	Pool        string            `json:"pool"`
	Labels      map[string]string `json:"labels,omitempty"`
	Provisioner string            `json:"provisioner"`
}

// Matches reports whether the pool carries every label of placement.
func (p PoolInfo) Matches(placement map[string]string) bool {
	for k, v := range placement {
		if got, ok := p.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ParsePoolLabels reads SPAWNER_POOL_LABELS, "key=value" pairs separated
// by commas, with the rules of request labels.
func ParsePoolLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("pool labels: %q is not key=value", part)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if err := checkLabels("pool labels", out, false); err != nil {
		return nil, err
	}
	return out, nil
}

// PoolSessions is a gateway's answer on "<prefix>.control.sessions": the
// live sessions of its own pool, each as its GET /sessions shows them.
type PoolSessions struct {
	Pool     string          `json:"pool"`
	Gateway  string          `json:"gateway"`
	Sessions json.RawMessage `json:"sessions"`
	Error    *Error          `json:"error,omitempty"`
}
