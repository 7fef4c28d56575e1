package client

import (
	"context"
	"net/http"

	"github.com/spawnerhq/spawner/messages"
)

// App is one app of the installation's catalog, as GET /apps lists it.
type App = messages.AppListing

// Resources are an app's limits in Kubernetes quantity syntax.
type Resources = messages.AppResources

// AppList is the catalog: its apps in name order and the default's name.
type AppList = messages.AppList

// Apps lists the apps a session may run; SpawnRequest.App picks one.
func (c *Client) Apps(ctx context.Context) (AppList, error) {
	var out AppList
	if err := c.do(ctx, http.MethodGet, "/apps", nil, &out); err != nil {
		return AppList{}, err
	}
	return out, nil
}
