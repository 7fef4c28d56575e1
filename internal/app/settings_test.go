package app

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestEverySettingHasADescription fails for any variable of any Config
// struct without a desc tag, so that help and README describe it.
func TestEverySettingHasADescription(t *testing.T) {
	settings, err := Settings()
	if err != nil {
		t.Fatal(err)
	}
	if len(settings) < 50 {
		t.Fatalf("found %d settings, want every one of every component", len(settings))
	}
	for _, s := range settings {
		if strings.TrimSpace(s.Desc) == "" {
			t.Errorf("%s has no description", s.Name)
		}
	}
}

func TestASettingWithoutDescriptionIsRefused(t *testing.T) {
	var cfg struct {
		Described string `envconfig:"DESCRIBED" desc:"has one"`
		Bare      string `envconfig:"BARE" default:"x"`
	}
	_, err := settingsOf([]settingPart{{"test", &cfg}})
	if err == nil || !strings.Contains(err.Error(), "SPAWNER_BARE") || strings.Contains(err.Error(), "SPAWNER_DESCRIBED") {
		t.Fatalf("err = %v, want one naming SPAWNER_BARE only", err)
	}
}

// TestREADMESettingsTableIsGenerated fails when README.md's table and the
// code's tags differ.
func TestREADMESettingsTableIsGenerated(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := ReplaceSettingsTable(readme)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readme, want) {
		t.Fatal("README.md's settings table differs from the desc tags in the code: run go generate ./internal/app")
	}
}

func TestUsageDescribesEverySetting(t *testing.T) {
	usage := Usage()
	settings, err := Settings()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(usage, "\n"), "\n")
	if len(lines) != len(settings) {
		t.Fatalf("usage has %d lines for %d settings:\n%s", len(lines), len(settings), usage)
	}
	for i, s := range settings {
		if !strings.Contains(lines[i], s.Name) || !strings.Contains(lines[i], s.Desc) {
			t.Errorf("usage line %q lacks %s or its description %q", lines[i], s.Name, s.Desc)
		}
	}
	for _, line := range lines {
		if strings.Contains(line, "SPAWNER_APPLICATION_IMAGE ") && !strings.Contains(line, "docker: spawner-demo:latest; kubernetes: none") {
			t.Errorf("usage line %q does not say the backends' defaults differ", line)
		}
		if strings.Contains(line, "SPAWNER_HTTP_ADDR ") && !strings.Contains(line, ":8080") {
			t.Errorf("usage line %q lacks the default", line)
		}
	}
}

func TestSharedSettingsWithOneDefaultShowIt(t *testing.T) {
	settings, _ := Settings()
	for _, s := range settings {
		if s.Name != "SPAWNER_APPLICATION_PORT" {
			continue
		}
		if d, ok := s.Default(); !ok || d != "8080" || len(s.Defaults) != 2 {
			t.Errorf("APPLICATION_PORT: default %q %v from %v, want 8080 from docker and kubernetes", d, ok, s.Defaults)
		}
		return
	}
	t.Error("SPAWNER_APPLICATION_PORT missing")
}

func TestMarkdownEscapesPipes(t *testing.T) {
	var cfg struct {
		Mode string `envconfig:"MODE" default:"a|b" desc:"one | other"`
	}
	settings, err := settingsOf([]settingPart{{"test", &cfg}})
	if err != nil || len(settings) != 1 {
		t.Fatal(settings, err)
	}
	if got := mdEscape(settings[0].Desc); got != `one \| other` {
		t.Errorf("escaped %q", got)
	}
}

// TestSettingsCoverEveryConfigPart fails when a part is added to Config
// but not to settingParts, whose settings help and README would miss.
func TestSettingsCoverEveryConfigPart(t *testing.T) {
	listed := map[reflect.Type]bool{}
	for _, p := range settingParts() {
		listed[reflect.TypeOf(p.cfg).Elem()] = true
	}
	var c Config
	for _, part := range c.parts() {
		if typ := reflect.TypeOf(part).Elem(); !listed[typ] {
			t.Errorf("Config part %s is not in settingParts", typ)
		}
	}
	typ := reflect.TypeFor[Config]()
	if n := len(c.parts()); n != typ.NumField() {
		t.Errorf("Config has %d fields, parts lists %d", typ.NumField(), n)
	}
}
