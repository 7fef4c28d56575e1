package client

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	gateway "github.com/spawnerhq/spawner/api-gateway"
	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/messages"
)

// Session mirrors the gateway's SessionView field for field, so that what
// the API sends is what the client decodes.
func TestSessionMirrorsTheGatewaysView(t *testing.T) {
	fields := func(v any) []string {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		return slices.Sorted(maps.Keys(m))
	}
	if got, want := fields(Session{}), fields(gateway.SessionView{}); !slices.Equal(got, want) {
		t.Errorf("client.Session fields %v, gateway.SessionView %v", got, want)
	}
}

// App mirrors the gateway's app listing field for field.
func TestAppMirrorsTheGatewaysListing(t *testing.T) {
	c, err := catalog.Parse("apps.yaml", []byte(`
apps:
  a:
    description: d
    status_source: sidecar
    routing: path
    idle_timeout: 1m
    max_lifetime: 1h
    warm_pool: 1
    env: {A: b}
    env_allow: [A]
    labels: {a: b}
    image: i
    resources: {cpu: "1", memory: 1Gi, gpu: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(messages.AppList{Default: c.Default, Apps: c.List()})
	var list AppList
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(list)
	if string(again) != string(data) {
		t.Errorf("client.AppList loses fields:\n got %s\nwant %s", again, data)
	}
}
