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

// Subjects names every subject, stream and bucket of one installation. Two
// installations with different prefixes can share one NATS without seeing
// each other's traffic.
type Subjects struct {
	prefix string
}

// NewSubjects returns the names for prefix, which must be a single NATS token
// of letters, digits, '_' or '-'.
func NewSubjects(prefix string) (Subjects, error) {
	if !prefixPattern.MatchString(prefix) {
		return Subjects{}, fmt.Errorf("subject prefix %q: want 1-32 of [A-Za-z0-9_-]", prefix)
	}
	return Subjects{prefix: prefix}, nil
}

// Prefix returns the configured prefix.
func (s Subjects) Prefix() string { return s.prefix }

// Requested is the request-reply subject that spawns a session. The request
// is a SpawnRequest; the reply is a SpawnReply.
func (s Subjects) Requested() string { return s.prefix + ".session.requested" }

// Stop is the request-reply subject that ends a session. The request is a
// StopRequest; the reply is a StopReply. Only the provisioner serves it.
// It sits outside "<prefix>.session.>" on purpose: an operator's wildcard
// subscription there would count as a responder, and a stop sent while no
// provisioner runs would wait for its timeout instead of failing at once.
func (s Subjects) Stop() string { return s.prefix + ".control.stop" }

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
func (s Subjects) Ping() string { return s.prefix + ".control.ping" }

// Event returns the subject of one lifecycle event type, such as
// "<prefix>.session.ready".
func (s Subjects) Event(t EventType) string { return s.prefix + ".session." + string(t) }

// Sessions matches every subject under "<prefix>.session.", including
// requests, which is what an operator subscribes to.
func (s Subjects) Sessions() string { return s.prefix + ".session.>" }

// Heartbeat is the subject of one session's heartbeats.
func (s Subjects) Heartbeat(sessionID string) string { return s.prefix + ".heartbeat." + sessionID }

// Heartbeats matches every session's heartbeats.
func (s Subjects) Heartbeats() string { return s.prefix + ".heartbeat.*" }

// Activity is where gateways publish what their proxies saw of each
// session's traffic, for the proxy status source. It is core NATS, not a
// stream: the prober folds it into the next heartbeat.
func (s Subjects) Activity() string { return s.prefix + ".activity" }

// HeartbeatStream is the JetStream stream that keeps heartbeats for the reaper.
func (s Subjects) HeartbeatStream() string { return s.prefix + "_heartbeats" }

// EventStream is the JetStream stream that keeps lifecycle events, so that
// dashboards can replay a session's history. It holds only event subjects,
// never the request subjects, because a stream answers requests on the
// subjects it captures.
func (s Subjects) EventStream() string { return s.prefix + "_events" }

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
func (s Subjects) SessionBucket() string { return s.prefix + "_sessions" }

// ReaperConsumer is the durable consumer name the reapers share.
func (s Subjects) ReaperConsumer() string { return "reaper" }
