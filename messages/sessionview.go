package messages

import "time"

// SessionView is a session as GET /sessions and /sessions/{id} show it: the
// record plus what the newest heartbeat said. Every field is always
// present, so that entries do not change shape when the first probe
// reports: the activity fields are null until then, and Probed says
// whether it has happened.
type SessionView struct {
	Session
	Probed bool `json:"probed"`
	// From the newest successful probe; null until one, or while the
	// newest probe failed.
	ActiveConnections *int       `json:"active_connections"`
	SecondsInactive   *int64     `json:"seconds_inactive"`
	LastActivity      *time.Time `json:"last_activity"`
	// LastProbe is when the newest probe ran; ProbeError why it failed,
	// null unless the newest probe failed.
	LastProbe  *time.Time `json:"last_probe"`
	ProbeError *string    `json:"probe_error"`
}
