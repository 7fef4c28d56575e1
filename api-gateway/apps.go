package gateway

import (
	"net/http"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/messages"
)

// SetCatalog puts a catalog in force for GET /apps and /init, as on
// SIGHUP; the provisioners check it first.
func (g *Gateway) SetCatalog(c *catalog.Catalog) {
	g.mx.KnowApps(c.Names())
	g.apps.Store(c)
}

// catalog is the apps this installation offers: the configured catalog, or
// the single default app of an installation without one.
func (g *Gateway) catalog() *catalog.Catalog { return g.apps.Load() }

// handleApps lists the catalog. Env values may be secrets, so only their
// names are shown, and commands and pod templates stay the operator's.
func (g *Gateway) handleApps(w http.ResponseWriter, _ *http.Request) {
	c := g.catalog()
	writeJSON(w, http.StatusOK, messages.AppList{Default: c.Default, Apps: c.List()})
}

// checkApp answers a request for an app the catalog lacks before it goes
// to a provisioner, with the list of the known ones.
func (g *Gateway) checkApp(req messages.SpawnRequest) *messages.Error {
	if _, err := g.catalog().Resolve(req.App); err != nil {
		return err.(*messages.Error)
	}
	return nil
}
