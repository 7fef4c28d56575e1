package messages_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spawnerhq/spawner/messages"
)

func TestDefaultEnvPolicy(t *testing.T) {
	p, err := messages.ParseEnvPolicy("")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "GLIBC_TUNABLES",
		"GCONV_PATH", "PATH", "BASH_ENV", "ENV", "IFS", "PYTHONPATH", "PYTHONSTARTUP", "NODE_OPTIONS", "PERL5OPT",
		"RUBYOPT", "JAVA_TOOL_OPTIONS", "LUA_INIT", "OPENSSL_CONF"} {
		err := p.Check(map[string]string{"GREETING": "hi", name: "x"})
		var e *messages.Error
		if !errors.As(err, &e) || e.Code != messages.CodeBadRequest || !strings.Contains(e.Message, name) || !strings.Contains(e.Message, "SPAWNER_ENV_ALLOW") {
			t.Errorf("env %s: %v, want a bad_request naming it and SPAWNER_ENV_ALLOW", name, err)
		}
	}
	for _, name := range []string{"GREETING", "LANG", "HOME", "PYTHONUNBUFFERED", "NODE_ENV", "XLD_PRELOAD", "PATHS", "ENVIRONMENT"} {
		if !p.Allowed(name) {
			t.Errorf("the default policy refuses %s", name)
		}
	}
	if (messages.EnvPolicy{}).Allowed("LD_PRELOAD") {
		t.Error("the zero policy allows LD_PRELOAD")
	}
}

func TestEnvAllowList(t *testing.T) {
	p, err := messages.ParseEnvPolicy("APP_*, LD_LIBRARY_PATH,DEBUG")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"APP_MODE": true, "APP_": true, "LD_LIBRARY_PATH": true, "DEBUG": true,
		"LD_PRELOAD": false, "GREETING": false, "DEBUGGER": false, "XAPP_MODE": false,
	} {
		if got := p.Allowed(name); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", name, got, want)
		}
	}
	if err := p.Check(map[string]string{"GREETING": "x"}); err == nil || !strings.Contains(err.Error(), "SPAWNER_ENV_ALLOW") {
		t.Errorf("a name outside the list: %v", err)
	}
	all, err := messages.ParseEnvPolicy("*")
	if err != nil || !all.Allowed("LD_PRELOAD") {
		t.Errorf(`"*" does not allow every name: %v`, err)
	}
	for _, bad := range []string{"A-B", "**", "A*B", "1X"} {
		if _, err := messages.ParseEnvPolicy(bad); err == nil {
			t.Errorf("ParseEnvPolicy(%q) accepted it", bad)
		}
	}
}

func FuzzEnvPolicy(f *testing.F) {
	f.Add("", "LD_PRELOAD")
	f.Add("APP_*", "APP_X")
	f.Add("*", "PATH")
	f.Fuzz(func(t *testing.T, allow, name string) {
		p, err := messages.ParseEnvPolicy(allow)
		if err != nil {
			return
		}
		if strings.TrimSpace(strings.ReplaceAll(allow, ",", "")) == "" && strings.HasPrefix(name, "LD_") && p.Allowed(name) {
			t.Fatalf("the default policy allows %q", name)
		}
		_ = p.Check(map[string]string{name: "x"})
	})
}
