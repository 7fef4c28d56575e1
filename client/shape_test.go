package client

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	gateway "github.com/spawnerhq/spawner/api-gateway"
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
