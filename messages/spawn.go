package messages

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// MaxRequestBytes bounds a spawn request body, on HTTP and on NATS.
const MaxRequestBytes = 1 << 20

// Bounds on what a spawn request may ask for. They keep one request from
// pinning resources for a year or flooding a pod spec.
const (
	MaxTimeoutSeconds = 7 * 24 * 3600
	MaxKeyLength      = 256
	MaxRequestID      = 128
	MaxMapEntries     = 64
	MaxValueLength    = 4096
)

// SpawnRequest is the body of POST /init and of a request on
// "<prefix>.session.requested". Every field is optional.
type SpawnRequest struct {
	// RequestID is chosen by the client to find its session in the events
	// when it published without a reply subject.
	RequestID string `json:"request_id,omitempty"`
	// App names the catalog app to run; empty is the catalog's default.
	App string `json:"app,omitempty"`
	// Key makes the request get-or-create: a live session with the same key
	// is returned instead of a new one.
	Key string `json:"key,omitempty"`
	// Env is added to the session's environment.
	Env map[string]string `json:"env,omitempty"`
	// Labels are attached to the session and to its backend objects.
	Labels map[string]string `json:"labels,omitempty"`
	// IdleTimeoutSeconds overrides the installation's idle timeout.
	IdleTimeoutSeconds int64 `json:"idle_timeout_seconds,omitempty"`
	// MaxLifetimeSeconds ends the session this long after it was created.
	MaxLifetimeSeconds int64 `json:"max_lifetime_seconds,omitempty"`
	// Pool names the pool to spawn in; empty lets the gateway pick, by
	// Placement or else the nearest pool that answers.
	Pool string `json:"pool,omitempty"`
	// Placement picks a pool by the labels pools advertise
	// (SPAWNER_POOL_LABELS): every entry must match. It cannot be combined
	// with Pool.
	Placement map[string]string `json:"placement,omitempty"`
}

// ErrorCode classifies a failure so that the HTTP gateway can pick a status.
type ErrorCode string

// The error codes a reply may carry.
const (
	CodeBadRequest   ErrorCode = "bad_request"
	CodeUnauthorized ErrorCode = "unauthorized"
	CodeTooLarge     ErrorCode = "too_large"
	CodeNotFound     ErrorCode = "not_found"
	CodeUnavailable  ErrorCode = "unavailable"
	CodeTimeout      ErrorCode = "timeout"
	CodeTooMany      ErrorCode = "too_many_sessions"
	CodeSpawnFailed  ErrorCode = "spawn_failed"
	CodeInternal     ErrorCode = "internal"
)

// Error is the error object of a reply and of every HTTP error body.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
}

// Error implements error.
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf builds an *Error with a formatted message.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// SpawnReply answers a spawn request: a session, or an error.
type SpawnReply struct {
	SessionID string `json:"session_id,omitempty"`
	URL       string `json:"url,omitempty"`
	Status    Status `json:"status,omitempty"`
	// Created is false when a live session with the request's key was returned.
	Created bool   `json:"created"`
	Key     string `json:"key,omitempty"`
	// Pool names the pool that serves the session; empty is the default pool.
	Pool string `json:"pool,omitempty"`
	// Token opens the session's URL when per-session auth is on.
	Token string `json:"token,omitempty"`
	Error *Error `json:"error,omitempty"`
}

var (
	envNamePattern   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelKeyPattern  = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	appNamePattern   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelValPattern  = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	reservedEnvNames = map[string]bool{"PORT": true, "HOST": true}
)

// Validate checks every field against the documented bounds.
func (r SpawnRequest) Validate() error {
	if len(r.Key) > MaxKeyLength || !utf8.ValidString(r.Key) || strings.ContainsRune(r.Key, 0) {
		return Errorf(CodeBadRequest, "key: at most %d bytes of UTF-8, with no NUL", MaxKeyLength)
	}
	if len(r.RequestID) > MaxRequestID || !utf8.ValidString(r.RequestID) || strings.ContainsRune(r.RequestID, 0) {
		return Errorf(CodeBadRequest, "request_id: at most %d bytes of UTF-8, with no NUL", MaxRequestID)
	}
	if r.App != "" && (len(r.App) > 63 || !appNamePattern.MatchString(r.App)) {
		return Errorf(CodeBadRequest, "app: %q is not an app name (lower-case letters, digits and dashes); GET /apps lists them", r.App)
	}
	if err := checkTimeout("idle_timeout_seconds", r.IdleTimeoutSeconds); err != nil {
		return err
	}
	if err := checkTimeout("max_lifetime_seconds", r.MaxLifetimeSeconds); err != nil {
		return err
	}
	if len(r.Env) > MaxMapEntries {
		return Errorf(CodeBadRequest, "env: at most %d entries", MaxMapEntries)
	}
	for name, value := range r.Env {
		if !envNamePattern.MatchString(name) || len(name) > 256 {
			return Errorf(CodeBadRequest, "env: %q is not a valid variable name", name)
		}
		if reservedEnvNames[name] || strings.HasPrefix(name, "SPAWNER_") {
			return Errorf(CodeBadRequest, "env: %q is reserved", name)
		}
		if len(value) > MaxValueLength || strings.ContainsRune(value, 0) || !utf8.ValidString(value) {
			return Errorf(CodeBadRequest, "env: value of %q is over %d bytes, holds NUL or is not UTF-8", name, MaxValueLength)
		}
	}
	if err := ValidPool(r.Pool); err != nil {
		return Errorf(CodeBadRequest, "pool: %q is not a pool name (1-32 letters, digits, '_' or '-')", r.Pool)
	}
	if r.Pool != "" && len(r.Placement) > 0 {
		return Errorf(CodeBadRequest, "pool and placement: name a pool or describe one by its labels, not both")
	}
	if err := checkLabels("placement", r.Placement, false); err != nil {
		return err
	}
	return checkLabels("labels", r.Labels, true)
}

// checkLabels checks a map of Kubernetes-style labels; with reserve, keys
// under LabelDomain are refused as Spawner's own.
func checkLabels(field string, labels map[string]string, reserve bool) error {
	if len(labels) > MaxMapEntries {
		return Errorf(CodeBadRequest, "%s: at most %d entries", field, MaxMapEntries)
	}
	for k, v := range labels {
		// Kubernetes limits the name after the optional prefix to 63 bytes;
		// a longer one would pass here and fail only when the pod is made.
		name := k[strings.LastIndex(k, "/")+1:]
		if len(k) > 253 || len(name) > 63 || !labelKeyPattern.MatchString(k) || (reserve && strings.HasPrefix(k, LabelDomain)) {
			return Errorf(CodeBadRequest, "%s: %q is not a valid label key", field, k)
		}
		if len(v) > 63 || !labelValPattern.MatchString(v) {
			return Errorf(CodeBadRequest, "%s: value %q of %q is not a valid label value", field, v, k)
		}
	}
	return nil
}

func checkTimeout(name string, v int64) error {
	if v < 0 || v > MaxTimeoutSeconds {
		return Errorf(CodeBadRequest, "%s: want 0 (the default) to %d", name, MaxTimeoutSeconds)
	}
	return nil
}

// LabelDomain prefixes the labels Spawner sets itself; users may not set them.
const LabelDomain = "spawner.dev/"

// StopRequest asks the provisioner to end a session.
type StopRequest struct {
	SessionID string `json:"session_id"`
	Reason    Reason `json:"reason"`
	Detail    string `json:"detail,omitempty"`
}

// StopReply answers a StopRequest. Stopping an unknown or ended session
// succeeds with Found false.
type StopReply struct {
	Found bool   `json:"found"`
	Error *Error `json:"error,omitempty"`
}
