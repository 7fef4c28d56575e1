package client

import (
	"context"
	"net/http"
)

// App is one app of the installation's catalog, as GET /apps lists it:
// the names of its default env but never their values.
type App struct {
	Name               string            `json:"name"`
	Default            bool              `json:"default,omitempty"`
	Description        string            `json:"description,omitempty"`
	StatusSource       string            `json:"status_source,omitempty"`
	Routing            string            `json:"routing,omitempty"`
	IdleTimeoutSeconds int64             `json:"idle_timeout_seconds,omitempty"`
	MaxLifetimeSeconds int64             `json:"max_lifetime_seconds,omitempty"`
	WarmPool           int               `json:"warm_pool,omitempty"`
	Env                []string          `json:"env,omitempty"`
	EnvAllow           []string          `json:"env_allow,omitempty"`
	Labels             map[string]string `json:"labels,omitempty"`
	Image              string            `json:"image,omitempty"`
	Resources          *Resources        `json:"resources,omitempty"`
}

// Resources are an app's limits in Kubernetes quantity syntax.
type Resources struct {
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
	GPU    int64  `json:"gpu,omitempty"`
}

// AppList is the catalog: its apps in name order and the default's name.
type AppList struct {
	Default string `json:"default"`
	Apps    []App  `json:"apps"`
}

// Apps lists the apps a session may run; SpawnRequest.App picks one.
func (c *Client) Apps(ctx context.Context) (AppList, error) {
	var out AppList
	if err := c.do(ctx, http.MethodGet, "/apps", nil, &out); err != nil {
		return AppList{}, err
	}
	return out, nil
}
