package gateway

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spawnerhq/spawner/messages"
)

type apiDoc struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
	Comps   struct {
		Schemas map[string]schema `json:"schemas"`
	} `json:"components"`
}

type operation struct {
	Responses map[string]struct {
		Content map[string]struct {
			Schema schema `json:"schema"`
		} `json:"content"`
	} `json:"responses"`
}

type schema struct {
	Ref      string   `json:"$ref"`
	Required []string `json:"required"`
}

func loadAPIDoc(t *testing.T) apiDoc {
	t.Helper()
	var doc apiDoc
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	return doc
}

// documentedOps returns "METHOD /path" for every operation in the document.
func (d apiDoc) documentedOps(t *testing.T) map[string]operation {
	out := map[string]operation{}
	for path, item := range d.Paths {
		for method, raw := range item {
			if method == "parameters" {
				continue
			}
			var op operation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			out[strings.ToUpper(method)+" "+path] = op
		}
	}
	return out
}

func TestOpenAPIDocumentsEveryRouteAndOnlyRoutes(t *testing.T) {
	e := newGWEnv(t, nil)
	doc := loadAPIDoc(t)
	ops := doc.documentedOps(t)
	var routed []string
	for _, rt := range e.gw.httpRoutes() {
		if rt.api {
			routed = append(routed, rt.pattern)
			if _, ok := ops[rt.pattern]; !ok {
				t.Errorf("route %q is not in openapi.json", rt.pattern)
			}
		}
	}
	for op := range ops {
		if !slices.Contains(routed, op) {
			t.Errorf("openapi.json documents %q, which the gateway does not route", op)
		}
	}
	if _, ok := ops["POST /init"]; !ok {
		t.Error("openapi.json does not describe POST /init")
	}
	// Every $ref must point at a schema that exists.
	for _, ref := range findRefs(openAPI) {
		name := strings.TrimPrefix(ref, "#/components/schemas/")
		if _, ok := doc.Comps.Schemas[name]; !ok || name == ref {
			t.Errorf("dangling $ref %q", ref)
		}
	}
}

func findRefs(data []byte) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if r, ok := x["$ref"].(string); ok {
				out = append(out, r)
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	var v any
	_ = json.Unmarshal(data, &v)
	walk(v)
	return out
}

// apiSample is one request a documented operation must answer with one
// of its documented statuses.
type apiSample struct {
	op, path, body string
}

func TestOpenAPIMatchesTheHandlers(t *testing.T) {
	// No provisioner runs here, so spawns and stops meet the answers a
	// gateway gives when none is there; each must still be documented.
	e := newGWEnv(t, nil)
	doc := loadAPIDoc(t)
	ops := doc.documentedOps(t)
	live := messages.NewSessionID()
	if _, err := e.reg.Create(t.Context(), messages.Session{ID: live, Status: messages.StatusReady, URL: "http://x/p/" + live + "/",
		Backend: "process", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	samples := []apiSample{
		{"POST /init", "/init", `{"key":"k"}`},
		{"POST /init", "/init", `{"nope":1}`},
		{"POST /init", "/init", `{"env":{"PORT":"1"}}`},
		{"POST /init", "/init", `{"app":"jupyter"}`},
		{"GET /apps", "/apps", ""},
		{"GET /sessions", "/sessions", ""},
		{"GET /sessions/{id}", "/sessions/" + live, ""},
		{"GET /sessions/{id}", "/sessions/" + messages.NewSessionID(), ""},
		{"GET /sessions/{id}", "/sessions/garbage", ""},
		{"DELETE /sessions/{id}", "/sessions/" + live, ""},
		{"DELETE /sessions/{id}", "/sessions/garbage", ""},
		{"GET /sessions/{id}/events", "/sessions/" + live + "/events", ""},
		{"GET /sessions/{id}/events", "/sessions/" + messages.NewSessionID() + "/events", ""},
		{"GET /events", "/events", ""},
		{"GET /events", "/events?replay=-4", ""},
		{"GET /healthz", "/healthz", ""},
		{"GET /readyz", "/readyz", ""},
		{"GET /metrics", "/metrics", ""},
		{"GET /openapi.json", "/openapi.json", ""},
	}
	sampled := map[string]bool{}
	for _, s := range samples {
		sampled[s.op] = true
		op, ok := ops[s.op]
		if !ok {
			t.Errorf("sample for undocumented %s", s.op)
			continue
		}
		status, ctype, body := e.call(t, s)
		resp, ok := op.Responses[strconv.Itoa(status)]
		if !ok {
			t.Errorf("%s %s answered %d, which openapi.json does not document for %s", method(s.op), s.path, status, s.op)
			continue
		}
		if len(resp.Content) == 0 {
			continue
		}
		media, _, _ := mime.ParseMediaType(ctype)
		content, ok := resp.Content[media]
		if !ok {
			t.Errorf("%s %s: %d with Content-Type %q, not documented", method(s.op), s.path, status, ctype)
			continue
		}
		if media == "application/json" {
			checkRequired(t, doc, content.Schema, body, s)
		}
	}
	for op := range ops {
		if !sampled[op] {
			t.Errorf("no sample request checks %s; add one", op)
		}
	}
}

func method(op string) string { m, _, _ := strings.Cut(op, " "); return m }

// call sends a sample and returns the status, the content type and, for
// anything but an event stream, the body.
func (e *gwEnv) call(t *testing.T, s apiSample) (int, string, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var body io.Reader
	if s.body != "" {
		body = strings.NewReader(s.body)
	}
	req, _ := http.NewRequestWithContext(ctx, method(s.op), e.srv.URL+s.path, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", s.path, err)
	}
	defer resp.Body.Close()
	ctype := resp.Header.Get("Content-Type")
	if strings.HasPrefix(ctype, "text/event-stream") {
		return resp.StatusCode, ctype, nil // it streams until cancelled
	}
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, ctype, data
}

// checkRequired checks that a JSON answer has the properties its schema
// requires.
func checkRequired(t *testing.T, doc apiDoc, sc schema, body []byte, s apiSample) {
	t.Helper()
	if sc.Ref != "" {
		sc = doc.Comps.Schemas[strings.TrimPrefix(sc.Ref, "#/components/schemas/")]
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		t.Errorf("%s %s: answer is not a JSON object: %q", method(s.op), s.path, body)
		return
	}
	for _, k := range sc.Required {
		if _, ok := obj[k]; !ok {
			t.Errorf("%s %s: answer %s lacks required %q", method(s.op), s.path, body, k)
		}
	}
}

// With API tokens on, the document must say which operations need one,
// and the 401 they answer without it must be documented.
func TestOpenAPIDescribesTheTokenCheck(t *testing.T) {
	e := newGWEnv(t, func(c *Config, _ *Deps) { c.AuthConfig.APITokens = []string{"t0ken"} })
	doc := loadAPIDoc(t)
	for _, rt := range e.gw.httpRoutes() {
		if !rt.api {
			continue
		}
		path := strings.TrimPrefix(rt.pattern, method(rt.pattern)+" ")
		var op struct {
			Security  *[]map[string][]string     `json:"security"`
			Responses map[string]json.RawMessage `json:"responses"`
		}
		if err := json.Unmarshal(doc.Paths[path][strings.ToLower(method(rt.pattern))], &op); err != nil {
			t.Fatalf("%s: %v", rt.pattern, err)
		}
		documentedOpen := op.Security != nil && len(*op.Security) == 0
		if documentedOpen != openPath(rt.pattern) {
			t.Errorf("%s: openapi.json says open=%v, the gateway open=%v", rt.pattern, documentedOpen, openPath(rt.pattern))
		}
		sample := strings.ReplaceAll(path, "{id}", messages.NewSessionID())
		status, _, _ := e.call(t, apiSample{op: rt.pattern, path: sample})
		if _, ok := op.Responses[strconv.Itoa(status)]; !ok {
			t.Errorf("%s without a token answered %d, not documented", rt.pattern, status)
		}
		if !openPath(rt.pattern) && status != http.StatusUnauthorized {
			t.Errorf("%s without a token answered %d, want 401", rt.pattern, status)
		}
	}
}
