package messages

import (
	"encoding/json"
	"fmt"
	"time"
)

// Activity is what one gateway replica saw of its sessions' traffic during
// one probe interval, published on "<prefix>.activity". Only sessions with
// traffic or open connections in the interval are listed, so the cost
// follows the active sessions, not all of them.
type Activity struct {
	// Gateway names the replica, so that readers can add up what several
	// replicas see of one session.
	Gateway  string            `json:"gateway"`
	Time     time.Time         `json:"time"`
	Sessions []SessionActivity `json:"sessions"`
}

// SessionActivity is one session's traffic through one gateway.
type SessionActivity struct {
	SessionID string `json:"session_id"`
	// InFlight counts requests whose responses are still being sent,
	// upgraded connections excluded.
	InFlight int `json:"in_flight"`
	// Upgraded counts open upgraded connections (WebSockets).
	Upgraded int `json:"upgraded"`
	// LastActive is when the last byte went either way.
	LastActive time.Time `json:"last_active"`
}

// MaxActivityEntries bounds the sessions of one Activity message; a gateway
// with more active sessions sends several.
const MaxActivityEntries = 500

// DecodeActivity parses an activity message and checks its entries.
func DecodeActivity(data []byte) (Activity, error) {
	var a Activity
	if len(data) > MaxActivityEntries*256+1024 {
		return Activity{}, fmt.Errorf("activity is over %d bytes", MaxActivityEntries*256+1024)
	}
	if err := json.Unmarshal(data, &a); err != nil {
		return Activity{}, fmt.Errorf("activity: %w", err)
	}
	if a.Gateway == "" {
		return Activity{}, fmt.Errorf("activity: no gateway name")
	}
	for _, s := range a.Sessions {
		if !ValidSessionID(s.SessionID) {
			return Activity{}, fmt.Errorf("activity: session id %q is not valid", s.SessionID)
		}
		if s.InFlight < 0 || s.Upgraded < 0 {
			return Activity{}, fmt.Errorf("activity: negative counts")
		}
	}
	return a, nil
}
