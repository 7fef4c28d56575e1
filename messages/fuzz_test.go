package messages_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/spawnerhq/spawner/messages"
)

func FuzzDecodeSpawnRequest(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `{"key":"k","env":{"A":"b"},"labels":{"x.io/y":"z"}}`,
		`{"idle_timeout_seconds":-1}`, `{"env":{"PORT":"1"}}`, `{} {}`, `{"key":"\ud800"}`,
		`{"labels":{"spawner.dev/a":"b"}}`, `{"KEY":"k","Env":{"a":"b"}}`, `[`, `null`,
		`{"key":null}`, `{"env":{"A":null}}`, `{"key":"a","key":"b"}`, `{"env":{"A":"1","\u0041":"2"}}`,
		"{\"key\":\"\xff\"}", `{"key":"\udc00\ud800"}`, `{"key":"\ud83d\ude00"}`, `{"key":"a\u0000"}`,
		`{"idle_timeout_seconds":1e3}`, `{"env":{"LD_PRELOAD":"/tmp/x.so"}}`, "{\"key\":\"k\"}\u0085",
		`{"pool":"eu-1"}`, `{"placement":{"region":"eu","gpu":"true"}}`, `{"pool":"eu-1","placement":{"region":"eu"}}`,
		`{"pool":"a.b"}`, `{"pool":""}`, `{"placement":{}}`, `{"placement":{"spawner.dev/x":"y"}}`, `{"Pool":"a"}`,
		`{"placement":null}`, `{"placement":{"region":1}}`,
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
		if !utf8.Valid(body) {
			t.Fatalf("accepted a body that is not UTF-8: %q", body)
		}
		// What was accepted means the same to encoding/json: no field in
		// another case, no duplicate, no null, no replaced character.
		if len(bytes.Trim(body, " \t\r\n")) > 0 {
			var std messages.SpawnRequest
			if err := json.Unmarshal(body, &std); err != nil || !reflect.DeepEqual(std, req) {
				t.Fatalf("encoding/json reads %q as %+v (%v), DecodeSpawnRequest as %+v", body, std, err, req)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(body, &fields); err != nil {
				t.Fatal(err)
			}
			for name, raw := range fields {
				if string(raw) == "null" {
					t.Fatalf("accepted null for %q", name)
				}
			}
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
