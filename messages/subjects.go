// Package messages is Spawner's public contract on NATS: the subjects, the
// request, reply and event types, and the session record. It imports nothing
// but the standard library so that any Go program can speak to Spawner.
package messages

import (
	"fmt"
	"regexp"
)

// DefaultPrefix is the subject prefix used when none is configured.
const DefaultPrefix = "spawner"

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Subjects names every subject, stream and bucket of one pool of one
// installation. Two installations with different prefixes can share one
// NATS without seeing each other's traffic.
//
// The default pool (no name) uses the names "<prefix>.session.requested",
// "<prefix>_sessions" and so on, as an installation of one pool always
// has. A named pool puts its subjects under "<prefix>.pool.<pool>." and its
// streams and bucket under "<prefix>_<pool>_", so pools may share one
// JetStream (a supercluster) or keep their own (leaf nodes with JetStream
// domains) without their state mixing.
type Subjects struct {
	prefix, pool string
}

// NewSubjects returns the names of the default pool for prefix, which must
// be a single NATS token of letters, digits, '_' or '-'.
func NewSubjects(prefix string) (Subjects, error) { return NewPoolSubjects(prefix, "") }

// NewPoolSubjects returns the names of one pool; an empty pool is the
// default pool. Pool names follow the same rule as prefixes.
func NewPoolSubjects(prefix, pool string) (Subjects, error) {
	if !prefixPattern.MatchString(prefix) {
		return Subjects{}, fmt.Errorf("subject prefix %q: want 1-32 of [A-Za-z0-9_-]", prefix)
	}
	if err := ValidPool(pool); err != nil {
		return Subjects{}, err
	}
	return Subjects{prefix: prefix, pool: pool}, nil
}

// ValidPool checks a pool name: empty (the default pool), or 1-32 of
// [A-Za-z0-9_-], one NATS token that is also valid in a stream name.
func ValidPool(pool string) error {
	if pool != "" && !prefixPattern.MatchString(pool) {
		return fmt.Errorf("pool %q: want 1-32 of [A-Za-z0-9_-]", pool)
	}
	return nil
}

// ForPool returns the names of another pool of the same installation;
// pool must have passed ValidPool.
func (s Subjects) ForPool(pool string) Subjects { return Subjects{prefix: s.prefix, pool: pool} }

// Prefix returns the configured prefix.
func (s Subjects) Prefix() string { return s.prefix }

// Pool returns the pool these names belong to; empty is the default pool.
func (s Subjects) Pool() string { return s.pool }

// base starts every subject of the pool.
func (s Subjects) base() string {
	if s.pool == "" {
		return s.prefix
	}
	return s.prefix + ".pool." + s.pool
}

// StateName names one more stream or bucket of the pool:
// "<prefix>_<name>" for the default pool, "<prefix>_<pool>_<name>" else.
func (s Subjects) StateName(name string) string { return s.names() + "_" + name }

// names starts every stream and bucket name of the pool.
func (s Subjects) names() string {
	if s.pool == "" {
		return s.prefix
	}
	return s.prefix + "_" + s.pool
}

// Requested is the request-reply subject that spawns a session in this
// pool. The request is a SpawnRequest; the reply is a SpawnReply. For the
// default pool it is AnyRequested; a named pool's is
// "<prefix>.pool.<pool>.control.spawn", outside the pool's event subjects
// for the reason Stop gives: a hub that follows every pool's events must
// not count as a responder to a pool's spawns.
func (s Subjects) Requested() string {
	if s.pool == "" {
		return s.AnyRequested()
	}
	return s.base() + ".control.spawn"
}

// AnyRequested is the request-reply subject that every provisioner of
// every pool serves in one queue group, "<prefix>.session.requested": NATS
// hands a request to a subscriber on the requester's own server or
// cluster when there is one, so a request that names no pool goes to the
// nearest pool that answers.
func (s Subjects) AnyRequested() string { return s.prefix + ".session.requested" }

// AnyPing is the ping every provisioner of every pool answers, asked
// before a request on AnyRequested.
func (s Subjects) AnyPing() string { return s.prefix + ".control.ping" }

// PoolRequests matches the spawn requests of every named pool.
func (s Subjects) PoolRequests() string { return s.prefix + ".pool.*.control.spawn" }

// PoolPings matches the pings of every named pool.
func (s Subjects) PoolPings() string { return s.prefix + ".pool.*.control.ping" }

// PoolEvents matches the lifecycle events of every named pool, which is
// what a hub subscribes to, together with Sessions for the default pool.
func (s Subjects) PoolEvents() string { return s.prefix + ".pool.*.session.>" }

// Pools is the request subject that every provisioner of every pool
// answers, without a queue group, with a PoolInfo: how a gateway learns
// which pools exist and what labels they carry.
func (s Subjects) Pools() string { return s.prefix + ".control.pools" }

// SessionLists is the request subject that every gateway of every pool
// answers, without a queue group, with a PoolSessions of its own pool: how
// a hub lists the sessions of every pool.
func (s Subjects) SessionLists() string { return s.prefix + ".control.sessions" }

// Stop is the request-reply subject that ends a session. The request is a
// StopRequest; the reply is a StopReply. Only the provisioner serves it.
// It sits outside "<prefix>.session.>" on purpose: an operator's wildcard
// subscription there would count as a responder, and a stop sent while no
// provisioner runs would wait for its timeout instead of failing at once.
func (s Subjects) Stop() string { return s.base() + ".control.stop" }

// OwnerStop is the stop subject of one provisioner, by its name: a
// provisioner that is asked on Stop to end a session only another one can
// reach (a process-backend app is its provisioner's child) hands the
// request on to the owner here. Characters a subject token cannot hold
// become '_'.
func (s Subjects) OwnerStop(owner string) string {
	token := []byte(owner)
	for i, c := range token {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			token[i] = '_'
		}
	}
	if len(token) == 0 {
		token = []byte("_")
	}
	return s.prefix + ".control.stop.owner." + string(token)
}

// OwnerStops matches every provisioner's OwnerStop subject.
func (s Subjects) OwnerStops() string { return s.prefix + ".control.stop.owner.*" }

// Ping is the request-reply subject every provisioner answers at once. The
// gateway asks it before a spawn, because an operator subscribed to
// "<prefix>.session.>" hides the absence of provisioners from a request
// on Requested.
func (s Subjects) Ping() string { return s.base() + ".control.ping" }

// Event returns the subject of one lifecycle event type, such as
// "<prefix>.session.ready".
func (s Subjects) Event(t EventType) string { return s.base() + ".session." + string(t) }

// Sessions matches every subject under "<prefix>.session.", including
// requests, which is what an operator subscribes to.
func (s Subjects) Sessions() string { return s.base() + ".session.>" }

// Heartbeat is the subject of one session's heartbeats.
func (s Subjects) Heartbeat(sessionID string) string { return s.base() + ".heartbeat." + sessionID }

// Heartbeats matches every session's heartbeats.
func (s Subjects) Heartbeats() string { return s.base() + ".heartbeat.*" }

// Activity is where gateways publish what their proxies saw of each
// session's traffic, for the proxy status source. It is core NATS, not a
// stream: the prober folds it into the next heartbeat.
func (s Subjects) Activity() string { return s.base() + ".activity" }

// HeartbeatStream is the JetStream stream that keeps heartbeats for the reaper.
func (s Subjects) HeartbeatStream() string { return s.names() + "_heartbeats" }

// EventStream is the JetStream stream that keeps lifecycle events, so that
// dashboards can replay a session's history. It holds only event subjects,
// never the request subjects, because a stream answers requests on the
// subjects it captures.
func (s Subjects) EventStream() string { return s.names() + "_events" }

// EventSubjects lists the subjects EventStream captures.
func (s Subjects) EventSubjects() []string {
	out := make([]string, 0, len(EventTypes))
	for _, t := range EventTypes {
		if t != EventRequested {
			out = append(out, s.Event(t))
		}
	}
	return out
}

// SessionBucket is the JetStream key-value bucket that holds session records.
func (s Subjects) SessionBucket() string { return s.names() + "_sessions" }

// ReaperConsumer is the durable consumer name the reapers share.
func (s Subjects) ReaperConsumer() string { return "reaper" }
