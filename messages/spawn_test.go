package messages_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

func TestDecodeSpawnRequestAccepts(t *testing.T) {
	tests := []struct {
		name string
		body string
		want messages.SpawnRequest
	}{
		{"empty body", "", messages.SpawnRequest{}},
		{"whitespace body", " \n\t ", messages.SpawnRequest{}},
		{"empty object", "{}", messages.SpawnRequest{}},
		{"trailing whitespace", "{}\n\n", messages.SpawnRequest{}},
		{"every field", `{"request_id":"r1","key":"k","env":{"FOO":"bar","_X1":""},"labels":{"team":"a","example.com/tier":"free-1"},"idle_timeout_seconds":60,"max_lifetime_seconds":604800}`,
			messages.SpawnRequest{RequestID: "r1", Key: "k", Env: map[string]string{"FOO": "bar", "_X1": ""},
				Labels: map[string]string{"team": "a", "example.com/tier": "free-1"}, IdleTimeoutSeconds: 60, MaxLifetimeSeconds: messages.MaxTimeoutSeconds}},
		{"zero timeouts mean the default", `{"idle_timeout_seconds":0,"max_lifetime_seconds":0}`, messages.SpawnRequest{}},
		{"unicode key", `{"key":"Ümlaut ✓"}`, messages.SpawnRequest{Key: "Ümlaut ✓"}},
		{"key at the limit", `{"key":"` + strings.Repeat("k", messages.MaxKeyLength) + `"}`, messages.SpawnRequest{Key: strings.Repeat("k", messages.MaxKeyLength)}},
		{"empty label value", `{"labels":{"a":""}}`, messages.SpawnRequest{Labels: map[string]string{"a": ""}}},
		{"label key name at 63", `{"labels":{"example.com/` + strings.Repeat("n", 63) + `":"v"}}`,
			messages.SpawnRequest{Labels: map[string]string{"example.com/" + strings.Repeat("n", 63): "v"}}},
		{"null maps", `{"env":null,"labels":null}`, messages.SpawnRequest{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := messages.DecodeSpawnRequest([]byte(tt.body))
			if err != nil {
				t.Fatalf("DecodeSpawnRequest(%q): %v", tt.body, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeSpawnRequestBodyOfExactlyTheLimit(t *testing.T) {
	body := append(bytes.Repeat([]byte(" "), messages.MaxRequestBytes-2), '{', '}')
	if _, err := messages.DecodeSpawnRequest(body); err != nil {
		t.Fatalf("a body of exactly %d bytes: %v", messages.MaxRequestBytes, err)
	}
}

func TestDecodeSpawnRequestRejects(t *testing.T) {
	manyEnv := map[string]string{}
	manyLabels := map[string]string{}
	for i := range messages.MaxMapEntries + 1 {
		manyEnv[fmt.Sprintf("V%d", i)] = "x"
		manyLabels[fmt.Sprintf("l%d", i)] = "x"
	}
	tests := []struct {
		name string
		body string
		code messages.ErrorCode
		msg  string // part of the message that tells the user what to fix
	}{
		{"not JSON", `hello`, messages.CodeBadRequest, "malformed JSON"},
		{"truncated", `{"key":"a"`, messages.CodeBadRequest, "malformed JSON"},
		{"array", `[]`, messages.CodeBadRequest, "malformed JSON"},
		{"string", `"x"`, messages.CodeBadRequest, "malformed JSON"},
		{"trailing garbage", `{} x`, messages.CodeBadRequest, "data after"},
		{"second object", `{}{}`, messages.CodeBadRequest, "data after"},
		{"unknown field", `{"image":"evil"}`, messages.CodeBadRequest, "unknown field"},
		{"wrong type", `{"key":1}`, messages.CodeBadRequest, "malformed JSON"},
		{"fractional timeout", `{"idle_timeout_seconds":1.5}`, messages.CodeBadRequest, "malformed JSON"},
		{"timeout overflows int64", `{"idle_timeout_seconds":1e30}`, messages.CodeBadRequest, "malformed JSON"},
		{"negative idle timeout", `{"idle_timeout_seconds":-1}`, messages.CodeBadRequest, "idle_timeout_seconds"},
		{"absurd idle timeout", fmt.Sprintf(`{"idle_timeout_seconds":%d}`, messages.MaxTimeoutSeconds+1), messages.CodeBadRequest, "idle_timeout_seconds"},
		{"negative lifetime", `{"max_lifetime_seconds":-5}`, messages.CodeBadRequest, "max_lifetime_seconds"},
		{"absurd lifetime", `{"max_lifetime_seconds":9223372036854775807}`, messages.CodeBadRequest, "max_lifetime_seconds"},
		{"key too long", `{"key":"` + strings.Repeat("k", messages.MaxKeyLength+1) + `"}`, messages.CodeBadRequest, "key"},
		{"request_id too long", `{"request_id":"` + strings.Repeat("r", messages.MaxRequestID+1) + `"}`, messages.CodeBadRequest, "request_id"},
		{"env name with dash", `{"env":{"MY-VAR":"x"}}`, messages.CodeBadRequest, "not a valid variable name"},
		{"env name starting with digit", `{"env":{"1X":"x"}}`, messages.CodeBadRequest, "not a valid variable name"},
		{"empty env name", `{"env":{"":"x"}}`, messages.CodeBadRequest, "not a valid variable name"},
		{"env name with equals", `{"env":{"A=B":"x"}}`, messages.CodeBadRequest, "not a valid variable name"},
		{"env name too long", `{"env":{"` + strings.Repeat("A", 257) + `":"x"}}`, messages.CodeBadRequest, "not a valid variable name"},
		{"reserved PORT", `{"env":{"PORT":"1"}}`, messages.CodeBadRequest, "reserved"},
		{"reserved HOST", `{"env":{"HOST":"0.0.0.0"}}`, messages.CodeBadRequest, "reserved"},
		{"reserved SPAWNER_ prefix", `{"env":{"SPAWNER_SESSION_ID":"x"}}`, messages.CodeBadRequest, "reserved"},
		{"env value with NUL", `{"env":{"A":"x\u0000y"}}`, messages.CodeBadRequest, "NUL"},
		{"env value too long", `{"env":{"A":"` + strings.Repeat("v", messages.MaxValueLength+1) + `"}}`, messages.CodeBadRequest, "over"},
		{"too many env entries", mustJSON(t, map[string]any{"env": manyEnv}), messages.CodeBadRequest, "at most"},
		{"too many labels", mustJSON(t, map[string]any{"labels": manyLabels}), messages.CodeBadRequest, "at most"},
		{"empty label key", `{"labels":{"":"x"}}`, messages.CodeBadRequest, "label key"},
		{"label key with space", `{"labels":{"a b":"x"}}`, messages.CodeBadRequest, "label key"},
		{"label key ends with dash", `{"labels":{"a-":"x"}}`, messages.CodeBadRequest, "label key"},
		{"label key with upper-case prefix", `{"labels":{"Example.com/a":"x"}}`, messages.CodeBadRequest, "label key"},
		{"label key in the reserved domain", `{"labels":{"spawner.dev/session":"x"}}`, messages.CodeBadRequest, "label key"},
		{"label key name over 63", `{"labels":{"` + strings.Repeat("n", 64) + `":"x"}}`, messages.CodeBadRequest, "label key"},
		{"label key over 253", `{"labels":{"` + strings.Repeat("a", 250) + `.com/n":"x"}}`, messages.CodeBadRequest, "label key"},
		{"label value with slash", `{"labels":{"a":"x/y"}}`, messages.CodeBadRequest, "label value"},
		{"label value ends with dot", `{"labels":{"a":"x."}}`, messages.CodeBadRequest, "label value"},
		{"label value over 63", `{"labels":{"a":"` + strings.Repeat("v", 64) + `"}}`, messages.CodeBadRequest, "label value"},
		{"over 1 MiB", `{"key":"` + strings.Repeat(" ", messages.MaxRequestBytes) + `"}`, messages.CodeTooLarge, "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := messages.DecodeSpawnRequest([]byte(tt.body))
			var e *messages.Error
			if !errors.As(err, &e) {
				t.Fatalf("DecodeSpawnRequest = %+v, %v; want a *messages.Error", got, err)
			}
			if e.Code != tt.code {
				t.Errorf("code = %q, want %q (%s)", e.Code, tt.code, e.Message)
			}
			if !strings.Contains(e.Message, tt.msg) {
				t.Errorf("message %q does not mention %q", e.Message, tt.msg)
			}
			if !reflect.DeepEqual(got, messages.SpawnRequest{}) {
				t.Errorf("a rejected request came back with values: %+v", got)
			}
		})
	}
}

func TestValidateRejectsInvalidUTF8(t *testing.T) {
	for _, req := range []messages.SpawnRequest{{Key: "a\xffb"}, {RequestID: "\xc3"}} {
		if err := req.Validate(); err == nil {
			t.Errorf("Validate(%#v) = nil, want an error", req)
		}
	}
}

func TestErrorFormatting(t *testing.T) {
	e := messages.Errorf(messages.CodeTimeout, "waited %ds", 5)
	if e.Error() != "timeout: waited 5s" {
		t.Errorf("Error() = %q", e.Error())
	}
	var target *messages.Error
	if !errors.As(fmt.Errorf("wrapped: %w", e), &target) || target.Code != messages.CodeTimeout {
		t.Error("a wrapped *Error is not found by errors.As")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	var b bytes.Buffer
	if err := jsonEncode(&b, v); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
