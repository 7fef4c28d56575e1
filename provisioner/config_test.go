package provisioner_test

import (
	"testing"

	"github.com/spawnerhq/spawner/provisioner"
)

// TestNewRejectsNonPositiveSettings: the defaults live in the tags, so New
// reports a zero setting instead of quietly using a second default.
func TestNewRejectsNonPositiveSettings(t *testing.T) {
	for _, mutate := range []func(*provisioner.Config){
		func(c *provisioner.Config) { c.Concurrency = 0 },
		func(c *provisioner.Config) { c.StopConcurrency = 0 },
		func(c *provisioner.Config) { c.Reconcile = 0 },
	} {
		cfg := testConfig()
		mutate(&cfg)
		if _, err := provisioner.New(cfg, provisioner.Deps{Backend: newMemBackend()}); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}
