package messages_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

func FuzzDecodeHeartbeat(f *testing.F) {
	good, _ := json.Marshal(messages.Heartbeat{SessionID: messages.NewSessionID(), Time: time.Unix(1700000000, 0).UTC(), OK: true, SecondsInactive: 3})
	f.Add(good)
	f.Add([]byte(`{"session_id":"../../etc","ok":true}`))
	f.Add([]byte(`{"session_id":"aaaaaaaaaaaaaaaaaaaaaaaaaa","seconds_inactive":-1}`))
	f.Add([]byte(strings.Repeat("[", 100000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		hb, err := messages.DecodeHeartbeat(data)
		if err != nil {
			return
		}
		if !messages.ValidSessionID(hb.SessionID) || hb.SecondsInactive < 0 || hb.ActiveConnections < 0 {
			t.Fatalf("accepted an invalid heartbeat %+v", hb)
		}
		again, _ := json.Marshal(hb)
		if _, err := messages.DecodeHeartbeat(again); err != nil {
			t.Fatalf("an accepted heartbeat does not round-trip: %v", err)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	good, _ := json.Marshal(messages.Event{Type: messages.EventReady, SessionID: messages.NewSessionID(), Time: time.Unix(1700000000, 0).UTC(), URL: "http://x/p/y/"})
	f.Add(good)
	f.Add([]byte(`{"type":"exploded","session_id":"aaaaaaaaaaaaaaaaaaaaaaaaaa"}`))
	f.Add([]byte(`{"type":"ready","session_id":""}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := messages.DecodeEvent(data)
		if err != nil {
			return
		}
		if !messages.ValidSessionID(ev.SessionID) {
			t.Fatalf("accepted an event with session id %q", ev.SessionID)
		}
		again, _ := json.Marshal(ev)
		if back, err := messages.DecodeEvent(again); err != nil || back.Type != ev.Type {
			t.Fatalf("an accepted event does not round-trip: %v", err)
		}
	})
}

func TestDecodeRejectsWhatFuzzingFinds(t *testing.T) {
	for _, bad := range []string{`{}`, `{"session_id":"x"}`, `[]`, `{"session_id":"aaaaaaaaaaaaaaaaaaaaaaaaaa","active_connections":-2}`, strings.Repeat(" ", messages.MaxEventBytes+1)} {
		if _, err := messages.DecodeHeartbeat([]byte(bad)); err == nil {
			t.Errorf("heartbeat %.40q accepted", bad)
		}
	}
	if _, err := messages.DecodeEvent([]byte(`{"type":"ready","session_id":"aaaaaaaaaaaaaaaaaaaaaaaaaa"}`)); err != nil {
		t.Errorf("a valid event was rejected: %v", err)
	}
	if _, err := messages.DecodeEvent([]byte(`{"type":"nope","session_id":"aaaaaaaaaaaaaaaaaaaaaaaaaa"}`)); err == nil {
		t.Error("an event of unknown type was accepted")
	}
}
