package sidecar

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/spawnerhq/spawner/messages"
)

// Handler serves GET /status, the AppStatus the prober polls, and GET
// /healthz, which only says that the sidecar itself is up.
func Handler(w *Watcher) http.Handler { return handler(w, slog.New(slog.DiscardHandler)) }

func handler(w *Watcher, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(rw http.ResponseWriter, r *http.Request) {
		if !allowRead(rw, r) {
			return
		}
		st, err := w.Status()
		if err != nil {
			log.Warn("reading tcp table", "err", err)
			writeJSON(rw, http.StatusInternalServerError, errorBody(messages.CodeInternal, err.Error()))
			return
		}
		writeJSON(rw, http.StatusOK, st)
	})
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, r *http.Request) {
		if !allowRead(rw, r) {
			return
		}
		// Liveness does not read the table: a restart would not fix an
		// unreadable /proc, and /status already reports that as an error.
		writeJSON(rw, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

// allowRead answers anything but GET and HEAD with 405, because a status
// endpoint that changed state on POST would be a surprise to caches and probes.
func allowRead(rw http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	rw.Header().Set("Allow", "GET, HEAD")
	writeJSON(rw, http.StatusMethodNotAllowed, errorBody(messages.CodeBadRequest, "method "+r.Method+" not allowed"))
	return false
}

func errorBody(code messages.ErrorCode, msg string) any {
	return struct {
		Error messages.Error `json:"error"`
	}{messages.Error{Code: code, Message: msg}}
}

func writeJSON(rw http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only fixed, marshalable types reach here; this is unreachable.
		http.Error(rw, "encoding response", http.StatusInternalServerError)
		return
	}
	h := rw.Header()
	h.Set("Content-Type", "application/json")
	// Every poll must see a fresh read, never a cached answer.
	h.Set("Cache-Control", "no-store")
	rw.WriteHeader(code)
	_, _ = rw.Write(append(body, '\n'))
}
