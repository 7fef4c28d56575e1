package gateway

import (
	_ "embed"
	"net/http"
)

// openAPI describes the HTTP API. openapi_test.go checks it against the
// routes and handlers, so it cannot drift from what the gateway serves.
//
//go:embed openapi.json
var openAPI []byte

// handleOpenAPI serves the OpenAPI 3 document at /openapi.json.
func handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	// Browser tools such as Swagger UI fetch the document from elsewhere.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	_, _ = w.Write(openAPI)
}
