package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// MaxFileBytes bounds a catalog file; real ones are a few kilobytes.
const MaxFileBytes = 1 << 20

// fileSpec is the catalog file's shape. These names are a contract with
// operators' files; new fields may be added, none renamed.
type fileSpec struct {
	Default string                     `json:"default"`
	Apps    map[string]json.RawMessage `json:"apps"`
}

// appSpec is one app as the file spells it.
type appSpec struct {
	Description  string            `json:"description"`
	Command      string            `json:"command"`
	StatusSource string            `json:"status_source"`
	Routing      string            `json:"routing"`
	IdleTimeout  string            `json:"idle_timeout"`
	MaxLifetime  string            `json:"max_lifetime"`
	WarmPool     int               `json:"warm_pool"`
	Env          map[string]string `json:"env"`
	EnvAllow     []string          `json:"env_allow"`
	Labels       map[string]string `json:"labels"`
	Image        string            `json:"image"`
	Resources    resourceSpec      `json:"resources"`
	PodTemplate  json.RawMessage   `json:"pod_template"`
}

type resourceSpec struct {
	CPU    quantity `json:"cpu"`
	Memory quantity `json:"memory"`
	GPU    int64    `json:"gpu"`
}

// quantity takes `cpu: 1` as well as `cpu: "1"`: YAML makes a number of
// the first, and both mean the same to an operator.
type quantity string

// UnmarshalJSON implements json.Unmarshaler.
func (q *quantity) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*q = quantity(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("want a quantity such as \"500m\", 2 or \"1Gi\", not %s", b)
	}
	*q = quantity(n.String())
	return nil
}

// Load reads and validates the catalog file at path.
func Load(path string) (*Catalog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("catalog %s: over %d bytes", path, MaxFileBytes)
	}
	return Parse(path, data)
}

var duplicateKey = regexp.MustCompile(`line (\d+): key "((?:[^"\\]|\\.)*)" already set in map`)

// Parse validates a catalog, YAML or JSON; name is the file's, for errors.
func Parse(name string, data []byte) (*Catalog, error) {
	c := &Catalog{File: name, apps: map[string]App{}}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("catalog %s: "+format, append([]any{c.fileName()}, args...)...)
	}
	// Strict conversion refuses duplicate keys, which a plain YAML or JSON
	// decoder would settle silently by keeping the last.
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		if m := duplicateKey.FindStringSubmatch(err.Error()); m != nil {
			return nil, fail("line %s: %q appears twice; app names and fields must be unique", m[1], m[2])
		}
		return nil, fail("%s", strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))
	}
	var f fileSpec
	if err := strictDecode(js, &f); err != nil {
		return nil, fail("%v; the top-level fields are default and apps", err)
	}
	if len(f.Apps) == 0 {
		return nil, fail("no apps: want an \"apps\" object naming at least one")
	}
	for appName, raw := range f.Apps {
		var s appSpec
		if err := strictDecode(raw, &s); err != nil {
			if strings.Contains(err.Error(), "unknown field") {
				return nil, c.wrap(appName, fmt.Errorf("%v; the fields are %s", err, strings.Join(Fields, ", ")))
			}
			return nil, c.wrap(appName, err)
		}
		a, err := validate(appName, s)
		if err != nil {
			return nil, c.wrap(appName, err)
		}
		c.apps[appName] = a
	}
	if f.Default == "" {
		if len(c.apps) != 1 {
			return nil, fail("no default: set \"default\" to one of %s", strings.Join(c.Names(), ", "))
		}
		f.Default = c.Names()[0]
	}
	if _, ok := c.apps[f.Default]; !ok {
		return nil, fail("default %q is not an app; the apps are %s", f.Default, strings.Join(c.Names(), ", "))
	}
	c.Default = f.Default
	return c, nil
}

// strictDecode decodes one JSON value, refusing unknown fields and null
// where a value is expected, and says which field was wrong.
func strictDecode(data []byte, v any) error {
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return errors.New("want an object, not null")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typ) && typ.Field != "":
			return &FieldError{Field: typ.Field, Err: fmt.Errorf("want %s, not a JSON %s", typ.Type, typ.Value)}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		}
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}
