package messages

// AppList is the body of GET /apps: the catalog's apps in name order and
// the name of the one a request without "app" gets.
type AppList struct {
	Default string       `json:"default"`
	Apps    []AppListing `json:"apps"`
}

// AppListing is one app as GET /apps shows it: the names of its default
// env but never their values, which may be secrets, and no command or pod
// template, which are the operator's.
type AppListing struct {
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
	Resources          *AppResources     `json:"resources,omitempty"`
}

// AppResources are an app's limits in Kubernetes quantity syntax.
type AppResources struct {
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
	GPU    int64  `json:"gpu,omitempty"`
}
