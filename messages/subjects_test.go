package messages_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

func TestNewSubjectsPrefix(t *testing.T) {
	for prefix, ok := range map[string]bool{
		"spawner":               true,
		"a":                     true,
		"Team_1-prod":           true,
		strings.Repeat("p", 32): true,
		strings.Repeat("p", 33): false,
		"":                      false,
		"a.b":                   false,
		"a b":                   false,
		"a*":                    false,
		">":                     false,
		"a\tb":                  false,
		"spawnér":               false,
		"a/b":                   false,
	} {
		s, err := messages.NewSubjects(prefix)
		if (err == nil) != ok {
			t.Errorf("NewSubjects(%q) error = %v, want ok=%v", prefix, err, ok)
			continue
		}
		if ok && s.Prefix() != prefix {
			t.Errorf("Prefix() = %q, want %q", s.Prefix(), prefix)
		}
	}
}

func TestSubjectNames(t *testing.T) {
	s, err := messages.NewSubjects(messages.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	id := messages.NewSessionID()
	for got, want := range map[string]string{
		s.Requested():                     "spawner.session.requested",
		s.Stop():                          "spawner.control.stop",
		s.Event(messages.EventReady):      "spawner.session.ready",
		s.Event(messages.EventTerminated): "spawner.session.terminated",
		s.Sessions():                      "spawner.session.>",
		s.Heartbeat(id):                   "spawner.heartbeat." + id,
		s.Heartbeats():                    "spawner.heartbeat.*",
		s.HeartbeatStream():               "spawner_heartbeats",
		s.EventStream():                   "spawner_events",
		s.SessionBucket():                 "spawner_sessions",
		s.ReaperConsumer():                "reaper",
		s.Event(messages.EventRequested):  "spawner.session.requested",
		s.OwnerStop("node-1"):             "spawner.control.stop.owner.node-1",
		s.OwnerStop("a.b *>"):             "spawner.control.stop.owner.a_b___",
		s.OwnerStop(""):                   "spawner.control.stop.owner._",
		s.OwnerStops():                    "spawner.control.stop.owner.*",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

// TestEventStreamLeavesRequestsAlone guards the rule that the event stream
// must not capture request subjects: a stream acknowledges every message it
// stores, and that ack would answer spawn and stop requests.
func TestEventStreamLeavesRequestsAlone(t *testing.T) {
	s, _ := messages.NewSubjects("team-a")
	got := s.EventSubjects()
	if len(got) != len(messages.EventTypes)-1 {
		t.Errorf("EventSubjects() = %v, want every type but requested", got)
	}
	for _, subj := range got {
		if subj == s.Requested() || subj == s.Stop() || strings.ContainsAny(subj, "*>") {
			t.Errorf("EventSubjects() holds %q", subj)
		}
		if !strings.HasPrefix(subj, "team-a.session.") {
			t.Errorf("%q is outside the installation's prefix", subj)
		}
	}
	for _, et := range messages.EventTypes {
		if et != messages.EventRequested && !slices.Contains(got, s.Event(et)) {
			t.Errorf("EventSubjects() misses %q", s.Event(et))
		}
	}
}

func TestPrefixesIsolateInstallations(t *testing.T) {
	a, _ := messages.NewSubjects("a")
	b, _ := messages.NewSubjects("ab")
	for _, pair := range [][2]string{
		{a.Requested(), b.Requested()}, {a.Heartbeats(), b.Heartbeats()},
		{a.HeartbeatStream(), b.HeartbeatStream()}, {a.SessionBucket(), b.SessionBucket()},
		{a.EventStream(), b.EventStream()},
	} {
		if pair[0] == pair[1] || strings.HasPrefix(pair[1], pair[0]+".") {
			t.Errorf("%q and %q overlap", pair[0], pair[1])
		}
	}
}
