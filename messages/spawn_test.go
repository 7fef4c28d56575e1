package messages_test

import (
	"bytes"
	"encoding/json"
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
		{"escaped names and a surrogate pair", `{"k\u0065y":"\ud83d\ude00","env":{"\u0041":"\u00e9"}}`,
			messages.SpawnRequest{Key: "😀", Env: map[string]string{"A": "é"}}},
		{"literal replacement character", `{"key":"�"}`, messages.SpawnRequest{Key: "\uFFFD"}},
		{"an app", `{"app":"files"}`, messages.SpawnRequest{App: "files"}},
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
		{"not JSON", `hello`, messages.CodeBadRequest, "malformed JSON at byte 0"},
		{"app not a name", `{"app":"../x"}`, messages.CodeBadRequest, `app: "../x" is not an app name`},
		{"app not a string", `{"app":1}`, messages.CodeBadRequest, "app must be a string"},
		{"app in capitals", `{"App":"x"}`, messages.CodeBadRequest, `field names are lower case: "app"`},
		{"bad literal", `{"key":nope}`, messages.CodeBadRequest, "malformed JSON at byte 8 (\"{\\\"key\\\":no\"): invalid character 'o'"},
		{"truncated", `{"key":"a"`, messages.CodeBadRequest, "ends at byte 10"},
		{"array", `[]`, messages.CodeBadRequest, "must be an object, not an array"},
		{"string", `"x"`, messages.CodeBadRequest, "must be an object, not a string"},
		{"null body", `null`, messages.CodeBadRequest, "must be an object, not null"},
		{"trailing garbage", `{} x`, messages.CodeBadRequest, "data after"},
		{"second object", `{}{}`, messages.CodeBadRequest, "data after"},
		{"unknown field", `{"image":"evil"}`, messages.CodeBadRequest, "unknown field"},
		{"field in title case", `{"Key":"k"}`, messages.CodeBadRequest, `unknown field "Key"`},
		{"field in upper case", `{"ENV":{"A":"b"}}`, messages.CodeBadRequest, `unknown field "ENV"`},
		{"field with a Kelvin sign", `{"Key":"k"}`, messages.CodeBadRequest, "unknown field"},
		{"duplicate field", `{"key":"a","key":"b"}`, messages.CodeBadRequest, `"key" appears twice`},
		{"duplicate field through an escape", `{"key":"a","k\u0065y":"b"}`, messages.CodeBadRequest, "appears twice"},
		{"duplicate env name", `{"env":{"A":"1","A":"2"}}`, messages.CodeBadRequest, `"A" appears twice`},
		{"duplicate label", `{"labels":{"a":"1","a":"2"}}`, messages.CodeBadRequest, "appears twice"},
		{"null key", `{"key":null}`, messages.CodeBadRequest, "key is null"},
		{"null env", `{"env":null}`, messages.CodeBadRequest, "env is null"},
		{"null labels", `{"labels":null}`, messages.CodeBadRequest, "labels is null"},
		{"null env value", `{"env":{"A":null}}`, messages.CodeBadRequest, "env.A is null"},
		{"null timeout", `{"idle_timeout_seconds":null}`, messages.CodeBadRequest, "idle_timeout_seconds is null"},
		{"invalid UTF-8 in a key", "{\"key\":\"a\xffb\"}", messages.CodeBadRequest, "byte 9: the body is not valid UTF-8"},
		{"invalid UTF-8 in an env value", "{\"env\":{\"A\":\"\xc3\"}}", messages.CodeBadRequest, "not valid UTF-8"},
		{"lone high surrogate", `{"key":"\ud800"}`, messages.CodeBadRequest, "surrogate"},
		{"lone low surrogate", `{"key":"a\udc00"}`, messages.CodeBadRequest, "surrogate"},
		{"high surrogate then a letter", `{"key":"\ud800\u0041"}`, messages.CodeBadRequest, "surrogate"},
		{"NUL in key", `{"key":"a\u0000b"}`, messages.CodeBadRequest, "NUL"},
		{"NUL in request_id", `{"request_id":"\u0000"}`, messages.CodeBadRequest, "NUL"},
		{"NUL in env name", `{"env":{"A\u0000":"x"}}`, messages.CodeBadRequest, "not a valid variable name"},
		{"NUL in label key", `{"labels":{"a\u0000":"x"}}`, messages.CodeBadRequest, "label key"},
		{"NUL in label value", `{"labels":{"a":"x\u0000"}}`, messages.CodeBadRequest, "label value"},
		{"wrong type", `{"key":1}`, messages.CodeBadRequest, "key must be a string, not a number"},
		{"env as an array", `{"env":["A=b"]}`, messages.CodeBadRequest, "env must be an object of strings, not an array"},
		{"env value as a number", `{"env":{"A":1}}`, messages.CodeBadRequest, "env.A must be a string"},
		{"fractional timeout", `{"idle_timeout_seconds":1.5}`, messages.CodeBadRequest, "whole number of seconds"},
		{"timeout overflows int64", `{"idle_timeout_seconds":1e30}`, messages.CodeBadRequest, "whole number of seconds"},
		{"timeout as a string", `{"idle_timeout_seconds":"60"}`, messages.CodeBadRequest, "whole number of seconds, not a string"},
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
	for _, req := range []messages.SpawnRequest{{Key: "a\xffb"}, {RequestID: "\xc3"}, {Env: map[string]string{"A": "\xff"}}, {Key: "a\x00"}} {
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

func TestDescribeJSONError(t *testing.T) {
	var v struct {
		Count int `json:"count"`
	}
	body := []byte(`{"count":"three"}`)
	msg := messages.DescribeJSONError(json.Unmarshal(body, &v), body)
	if !strings.Contains(msg, "at byte 16") || !strings.Contains(msg, "count must be a number, not a JSON string") {
		t.Errorf("type error described as %q", msg)
	}
	body = []byte(`{"count": tru}`)
	msg = messages.DescribeJSONError(json.Unmarshal(body, &v), body)
	if !strings.Contains(msg, "at byte 13") || !strings.Contains(msg, `"{\"count\": tru}"`) {
		t.Errorf("syntax error described as %q", msg)
	}
}
