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

func TestPoolSubjectNames(t *testing.T) {
	def, _ := messages.NewSubjects("spawner")
	eu, err := messages.NewPoolSubjects("spawner", "eu-1")
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		def.Requested():          "spawner.session.requested",
		def.AnyRequested():       "spawner.session.requested",
		eu.Requested():           "spawner.pool.eu-1.control.spawn",
		eu.PoolRequests():        "spawner.pool.*.control.spawn",
		eu.AnyRequested():        "spawner.session.requested",
		eu.Stop():                "spawner.pool.eu-1.control.stop",
		eu.Ping():                "spawner.pool.eu-1.control.ping",
		eu.AnyPing():             "spawner.control.ping",
		eu.Heartbeat("x"):        "spawner.pool.eu-1.heartbeat.x",
		eu.Activity():            "spawner.pool.eu-1.activity",
		eu.Event("ready"):        "spawner.pool.eu-1.session.ready",
		eu.SessionBucket():       "spawner_eu-1_sessions",
		eu.EventStream():         "spawner_eu-1_events",
		eu.HeartbeatStream():     "spawner_eu-1_heartbeats",
		def.SessionBucket():      "spawner_sessions",
		eu.StateName("extra"):    "spawner_eu-1_extra",
		def.ForPool("us").Ping(): "spawner.pool.us.control.ping",
		eu.ForPool("").Ping():    "spawner.control.ping",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	// A named pool's events lie outside the default pool's wildcard, so an
	// event stream of one pool never captures another's.
	if strings.HasPrefix(eu.Event("ready"), strings.TrimSuffix(def.Sessions(), ">")) {
		t.Errorf("%s falls under %s", eu.Event("ready"), def.Sessions())
	}
	// Following every pool's events must not answer for a pool's spawns.
	if strings.HasPrefix(eu.Requested(), "spawner.pool.eu-1.session.") {
		t.Errorf("%s falls under %s", eu.Requested(), eu.PoolEvents())
	}
	for _, bad := range []string{"a.b", "*", ">", "a b", strings.Repeat("p", 33)} {
		if _, err := messages.NewPoolSubjects("spawner", bad); err == nil {
			t.Errorf("pool %q accepted", bad)
		}
	}
}

func TestPoolInfoMatches(t *testing.T) {
	p := messages.PoolInfo{Pool: "eu-1", Labels: map[string]string{"region": "eu", "gpu": "true"}}
	for _, c := range []struct {
		placement map[string]string
		want      bool
	}{
		{nil, true}, {map[string]string{"region": "eu"}, true},
		{map[string]string{"region": "eu", "gpu": "true"}, true},
		{map[string]string{"region": "us"}, false}, {map[string]string{"zone": ""}, false},
	} {
		if got := p.Matches(c.placement); got != c.want {
			t.Errorf("Matches(%v) = %v, want %v", c.placement, got, c.want)
		}
	}
	labels, err := messages.ParsePoolLabels(" region=eu, gpu=true ,")
	if err != nil || len(labels) != 2 || labels["gpu"] != "true" {
		t.Errorf("ParsePoolLabels = %v, %v", labels, err)
	}
	for _, bad := range []string{"region", "=eu", "re gion=eu"} {
		if _, err := messages.ParsePoolLabels(bad); err == nil {
			t.Errorf("ParsePoolLabels(%q) accepted", bad)
		}
	}
}
