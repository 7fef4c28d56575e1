package app

import (
	"errors"
	"strings"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/provisioner/docker"
	"github.com/spawnerhq/spawner/provisioner/kube"
)

// catalog reads SPAWNER_APPS for the gateway and the provisioner, refusing
// at start what the configured backend cannot run; it is nil without it.
func (m *Main) catalog() (*catalog.Catalog, error) {
	if m.Config.Common.Apps == "" {
		return nil, nil
	}
	return loadCatalog(m.Config)
}

// loadCatalog reads SPAWNER_APPS and checks it against the backend.
func loadCatalog(cfg Config) (*catalog.Catalog, error) {
	c, err := catalog.Load(cfg.Common.Apps)
	if err != nil {
		return nil, err
	}
	switch cfg.Provisioner.Backend {
	case "docker":
		err = c.Check(func(a catalog.App) error { return docker.CheckApp(cfg.Docker, a) })
	case "kubernetes":
		err = c.Check(func(a catalog.App) error { return kube.CheckApp(cfg.Kube, a) })
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads SPAWNER_APPS again and puts it in force in this process's
// provisioner and gateway, as SIGHUP does. A catalog that fails its checks
// changes nothing, and the error says why. Live sessions keep running; see
// provisioner.SetCatalog for what happens to warm pools.
func (m *Main) Reload() error {
	if m.Config.Common.Apps == "" {
		return errors.New("no catalog to reload: SPAWNER_APPS is not set")
	}
	c, err := loadCatalog(m.Config)
	if err != nil {
		return err
	}
	m.reload.Lock()
	defer m.reload.Unlock()
	// The provisioner checks more (routing, env_allow), so it goes first.
	if m.provisioner != nil {
		if err := m.provisioner.SetCatalog(c); err != nil {
			return err
		}
	}
	if m.gateway != nil {
		m.gateway.SetCatalog(c)
	}
	m.Log.Info("catalog reloaded", "file", m.Config.Common.Apps, "apps", strings.Join(c.Names(), ","))
	return nil
}
