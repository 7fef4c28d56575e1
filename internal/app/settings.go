package app

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"

	gateway "github.com/spawnerhq/spawner/api-gateway"
	"github.com/spawnerhq/spawner/internal/bus"
	"github.com/spawnerhq/spawner/prober"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/docker"
	"github.com/spawnerhq/spawner/provisioner/kube"
	"github.com/spawnerhq/spawner/provisioner/process"
	"github.com/spawnerhq/spawner/reaper"
	"github.com/spawnerhq/spawner/sidecar"
)

// Setting is one environment variable, gathered from the tags of every
// Config struct that reads it, so help and README come from the code.
type Setting struct {
	// Name is the full variable name, prefix included.
	Name string
	// Desc is the desc tag; parts that share a variable and describe it
	// differently are joined with "; ".
	Desc string
	// Defaults holds one entry per part that reads the variable.
	Defaults []PartDefault
}

// PartDefault is one reader's default of a shared setting.
type PartDefault struct {
	Part, Default string
}

// Default is the setting's default when every reader agrees on it.
func (s Setting) Default() (string, bool) {
	for _, d := range s.Defaults[1:] {
		if d.Default != s.Defaults[0].Default {
			return "", false
		}
	}
	return s.Defaults[0].Default, true
}

// settingPart is a Config struct and the name help gives its readers.
type settingPart struct {
	name string
	cfg  any
}

// settingParts names every struct whose variables are settings, in the
// order help lists them. It covers LoadConfig's parts and the sidecar's.
func settingParts() []settingPart {
	return []settingPart{
		{"gateway", &gateway.Config{}},
		{"nats", &bus.Config{}},
		{"provisioner", &provisioner.Config{}},
		{"process", &process.Config{}},
		{"docker", &docker.Config{}},
		{"kubernetes", &kube.Config{}},
		{"prober", &prober.Config{}},
		{"reaper", &reaper.Config{}},
		{"common", &Common{}},
		{"sidecar", &sidecar.Config{}},
	}
}

// fieldSep separates the template's fields; no tag contains it.
const fieldSep = "\x1f"

// Settings lists every variable once, in the order of settingParts. It
// fails when a variable has no description, so a new setting cannot ship
// without one.
func Settings() ([]Setting, error) { return settingsOf(settingParts()) }

func settingsOf(parts []settingPart) ([]Setting, error) {
	var out []Setting
	index := map[string]int{}
	var missing []string
	for _, p := range parts {
		var raw bytes.Buffer
		tmpl := "{{range .}}{{usage_key .}}" + fieldSep + "{{usage_default .}}" + fieldSep + "{{usage_description .}}\n{{end}}"
		if err := envconfig.Usagef(EnvPrefix, p.cfg, &raw, tmpl); err != nil {
			return nil, fmt.Errorf("settings of %s: %w", p.name, err)
		}
		for _, line := range strings.Split(strings.TrimSuffix(raw.String(), "\n"), "\n") {
			f := strings.Split(line, fieldSep)
			if len(f) != 3 || f[0] == "" {
				continue
			}
			name, def, desc := f[0], f[1], f[2]
			if desc == "" {
				missing = append(missing, fmt.Sprintf("%s (%s)", name, p.name))
			}
			i, ok := index[name]
			if !ok {
				index[name] = len(out)
				out = append(out, Setting{Name: name, Desc: desc})
				i = len(out) - 1
			} else if desc != "" && !strings.Contains(out[i].Desc, desc) {
				out[i].Desc = joinNonEmpty(out[i].Desc, desc)
			}
			out[i].Defaults = append(out[i].Defaults, PartDefault{Part: p.name, Default: def})
		}
	}
	if len(missing) > 0 {
		return out, errors.New("settings without a desc tag: " + strings.Join(missing, ", "))
	}
	return out, nil
}

func joinNonEmpty(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// defaultText is the default for help and README; where readers differ,
// it names each reader's default.
func (s Setting) defaultText(quote func(string) string) string {
	if d, ok := s.Default(); ok {
		if d == "" {
			return ""
		}
		return quote(d)
	}
	var parts []string
	for _, d := range s.Defaults {
		v := "none"
		if d.Default != "" {
			v = quote(d.Default)
		}
		parts = append(parts, d.Part+": "+v)
	}
	return strings.Join(parts, "; ")
}

// Usage lists every variable once, with its default and description, for
// the help text. A setting whose default differs between the parts that
// read it (backends, say) shows each part's default.
func Usage() string {
	settings, err := Settings()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	for _, s := range settings {
		def, desc := s.defaultText(func(v string) string { return v }), s.Desc
		if _, same := s.Default(); !same {
			// Each reader's default goes after the description, so that
			// one long cell does not widen every line's column.
			def, desc = "(differs)", desc+" [defaults: "+def+"]"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.Name, def, desc)
	}
	_ = tw.Flush()
	if err != nil {
		fmt.Fprintf(&b, "\n(%v)\n", err)
	}
	return b.String()
}

// Markdown is the README's settings table, generated from the same tags
// as Usage.
func Markdown() (string, error) {
	settings, err := Settings()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("| Variable | Default | Meaning |\n| --- | --- | --- |\n")
	code := func(v string) string { return "`" + v + "`" }
	for _, s := range settings {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", s.Name, mdEscape(s.defaultText(code)), mdEscape(s.Desc))
	}
	return b.String(), nil
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// The markers around the generated table in README.md.
const (
	SettingsBegin = "<!-- settings:begin (generated by go generate ./internal/app; edit the desc tags instead) -->"
	SettingsEnd   = "<!-- settings:end -->"
)

// ReplaceSettingsTable returns readme with the text between the settings
// markers replaced by Markdown's table.
func ReplaceSettingsTable(readme []byte) ([]byte, error) {
	table, err := Markdown()
	if err != nil {
		return nil, err
	}
	s := string(readme)
	i := strings.Index(s, SettingsBegin)
	j := strings.Index(s, SettingsEnd)
	if i < 0 || j < i {
		return nil, errors.New("README has no settings markers")
	}
	return []byte(s[:i] + SettingsBegin + "\n" + table + s[j:]), nil
}
