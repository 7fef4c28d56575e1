// Package client is a Go client for Spawner's HTTP API: spawn, list, get
// and end sessions, and follow their lifecycle events. SpawnNATS spawns
// over NATS request-reply instead, for programs already on the bus.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spawnerhq/spawner/messages"
)

// maxResponseBytes bounds a JSON answer; a list of many thousand sessions
// fits easily, an endless body does not.
const maxResponseBytes = 64 << 20

// Client talks to one Spawner gateway. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends token as a Bearer token with every request.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient uses hc instead of a default client. Its Timeout must be
// zero for Events, whose streams stay open.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// New returns a client for the gateway at baseURL, such as
// "http://localhost:8080".
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("api url %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api url %q: want http(s)://host[:port]", baseURL)
	}
	c := &Client{base: u, http: &http.Client{}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Session is a live session as GET /sessions shows it: the registry's
// record plus what the newest probe said. Probed says whether a probe has
// reported yet; the activity fields are nil until the first successful
// probe, and ProbeError is nil unless the newest probe failed.
type Session = messages.SessionView

// Error is an error answer of the API.
type Error struct {
	// StatusCode is the HTTP status.
	StatusCode int
	Code       messages.ErrorCode
	Message    string
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.StatusCode, e.Code, e.Message)
}

// IsNotFound reports whether err is the API saying there is no such session.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

// Init spawns a session, or returns the live one with req.Key; the reply's
// Created says which.
func (c *Client) Init(ctx context.Context, req messages.SpawnRequest) (messages.SpawnReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return messages.SpawnReply{}, fmt.Errorf("encode spawn request: %w", err)
	}
	var rep messages.SpawnReply
	if err := c.do(ctx, http.MethodPost, "/init", body, &rep); err != nil {
		return messages.SpawnReply{}, err
	}
	return rep, nil
}

// List returns every live session the gateway lists by default (its own
// pool's, or every pool's on a hub), oldest first.
func (c *Client) List(ctx context.Context) ([]Session, error) { return c.ListPool(ctx, "") }

// AllPools names every pool to ListPool.
const AllPools = "*"

// ListPool returns the live sessions of one pool, or of every pool with
// AllPools, oldest first; an empty pool is List.
func (c *Client) ListPool(ctx context.Context, pool string) ([]Session, error) {
	var out struct {
		Sessions []Session `json:"sessions"`
	}
	var query url.Values
	if pool != "" {
		query = url.Values{"pool": {pool}}
	}
	if err := c.doQuery(ctx, http.MethodGet, "/sessions", query, nil, &out); err != nil {
		return nil, err
	}
	return out.Sessions, nil
}

// Get returns one live session; IsNotFound(err) when there is none.
func (c *Client) Get(ctx context.Context, id string) (Session, error) {
	if err := checkID(id); err != nil {
		return Session{}, err
	}
	var s Session
	if err := c.do(ctx, http.MethodGet, "/sessions/"+id, nil, &s); err != nil {
		return Session{}, err
	}
	return s, nil
}

// Delete ends a session; IsNotFound(err) when there is none.
func (c *Client) Delete(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, "/sessions/"+id, nil, nil)
}

// checkID rejects what cannot be a session id before it becomes a path.
func checkID(id string) error {
	if !messages.ValidSessionID(id) {
		return fmt.Errorf("%q is not a session id (26 characters of a-z and 2-7)", id)
	}
	return nil
}

func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body []byte) (*http.Request, error) {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawPath = ""
	u.RawQuery = query.Encode()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	return c.doQuery(ctx, method, path, nil, body, out)
}

func (c *Client) doQuery(ctx context.Context, method, path string, query url.Values, body []byte, out any) error {
	req, err := c.newRequest(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return decodeError(resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, path, err)
	}
	return nil
}

// decodeError turns an error answer into *Error, also when a proxy in
// front of Spawner answered with something other than Spawner's JSON.
func decodeError(status int, data []byte) error {
	var body struct {
		Error *messages.Error `json:"error"`
	}
	if json.Unmarshal(data, &body) == nil && body.Error != nil {
		return &Error{StatusCode: status, Code: body.Error.Code, Message: body.Error.Message}
	}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{StatusCode: status, Code: "http_" + messages.ErrorCode(fmt.Sprint(status)), Message: msg}
}
