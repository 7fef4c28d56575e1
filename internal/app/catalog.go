package app

import (
	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/provisioner/docker"
	"github.com/spawnerhq/spawner/provisioner/kube"
)

// useCatalog reads SPAWNER_APPS and hands the catalog to the gateway and
// the provisioner, refusing at start what the configured backend cannot
// run. Without it the gateway lists the one app the settings define.
func useCatalog(cfg *Config) error {
	if cfg.Common.Apps == "" {
		cfg.Gateway.Catalog = catalog.Single(cfg.Provisioner.WarmPool)
		return nil
	}
	c, err := catalog.Load(cfg.Common.Apps)
	if err != nil {
		return err
	}
	switch cfg.Provisioner.Backend {
	case "docker":
		err = c.Check(func(a catalog.App) error { return docker.CheckApp(cfg.Docker, a) })
	case "kubernetes":
		err = c.Check(func(a catalog.App) error { return kube.CheckApp(cfg.Kube, a) })
	}
	if err != nil {
		return err
	}
	cfg.Gateway.Catalog, cfg.Provisioner.Catalog = c, c
	return nil
}
