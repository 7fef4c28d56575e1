package bus

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                      "nats://127.0.0.1:4222",
		"nats://user:hunter2@host:4222":              "nats://user:xxxxx@host:4222",
		"nats://tok3n@host:4222":                     "nats://xxxxx@host:4222",
		"nats://a:pw1@h1:4222, nats://b:pw2@h2:4222": "nats://a:xxxxx@h1:4222,nats://b:xxxxx@h2:4222",
		"nats://a:pw1@h1:4222,nats://b:pw2@[::1":     "nats://a:xxxxx@h1:4222,<unparsable url>",
		"":                                           "",
	} {
		got := redact(in)
		if got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
		for _, secret := range []string{"hunter2", "tok3n", "pw1", "pw2"} {
			if strings.Contains(got, secret) {
				t.Errorf("redact(%q) shows %q", in, secret)
			}
		}
	}
}
