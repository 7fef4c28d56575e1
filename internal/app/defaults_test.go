package app

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/internal/settings"
)

// TestDefaultsAreTheEnvironmentsDefaults holds settings.Defaults, which
// tests build their configurations from, to what LoadConfig reads from an
// environment without settings.
func TestDefaultsAreTheEnvironmentsDefaults(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, EnvPrefix+"_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	loaded, err := LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	got := settings.Defaults[Config]()
	if !reflect.DeepEqual(got, loaded) {
		t.Errorf("settings.Defaults:\n%+v\nLoadConfig:\n%+v", got, loaded)
	}
}
