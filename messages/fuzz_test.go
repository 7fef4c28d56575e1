package messages_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

func FuzzDecodeSpawnRequest(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `{"key":"k","env":{"A":"b"},"labels":{"x.io/y":"z"}}`,
		`{"idle_timeout_seconds":-1}`, `{"env":{"PORT":"1"}}`, `{} {}`, `{"key":"\ud800"}`,
		`{"labels":{"spawner.dev/a":"b"}}`, `{"KEY":"k","Env":{"a":"b"}}`, `[`, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := messages.DecodeSpawnRequest(body)
		if err != nil {
			var e *messages.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *messages.Error", err)
			}
			if e.Code != messages.CodeBadRequest && e.Code != messages.CodeTooLarge {
				t.Fatalf("code %q, want bad_request or too_large", e.Code)
			}
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted %+v, which does not validate: %v", req, err)
		}
		// What was accepted must survive the trip to the provisioner.
		data, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := messages.DecodeSpawnRequest(data)
		if err != nil {
			t.Fatalf("re-encoded request %s is rejected: %v", data, err)
		}
		data2, _ := json.Marshal(again)
		if !bytes.Equal(data, data2) {
			t.Fatalf("round trip changed the request:\n%s\n%s", data, data2)
		}
	})
}

func FuzzDecodeAppStatus(f *testing.F) {
	for _, seed := range []string{
		`{"active_connections":1,"seconds_inactive":2,"listening":true}`, `{}`, ``, `null`,
		`{"active_connections":-1}`, `{"seconds_inactive":1e99}`, `<html>`, strings.Repeat("[", 1000),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		st, err := messages.DecodeAppStatus(bytes.NewReader(body))
		if err != nil {
			if st != (messages.AppStatus{}) {
				t.Fatalf("an error came with values: %+v", st)
			}
			return
		}
		if st.ActiveConnections < 0 || st.SecondsInactive < 0 {
			t.Fatalf("accepted negative counts: %+v", st)
		}
		if len(body) > messages.MaxStatusBytes {
			t.Fatalf("accepted %d bytes, over the limit", len(body))
		}
		data, _ := json.Marshal(st)
		again, err := messages.DecodeAppStatus(bytes.NewReader(data))
		if err != nil || again != st {
			t.Fatalf("re-encoded %s: %+v, %v", data, again, err)
		}
	})
}
