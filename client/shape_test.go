package client

import (
	"encoding/json"
	"testing"

	"github.com/spawnerhq/spawner/internal/catalog"
	"github.com/spawnerhq/spawner/messages"
)

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
