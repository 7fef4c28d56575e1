package messages

import (
	"fmt"
	"sort"
	"strings"
)

// DefaultEnvDeny lists the variables a spawn request may not set unless the
// operator allows them with SPAWNER_ENV_ALLOW. Each one changes what code a
// program loads or runs before its own: the dynamic loader's settings, the
// search paths and startup hooks of shells and language runtimes, and
// modules that libc or OpenSSL load on demand. An entry ending in "*" is a
// prefix. Variables that only change what a program does once it runs
// (HTTP_PROXY, HOME, LANG, ...) are not on it.
var DefaultEnvDeny = []string{
	// The dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ... on
	// glibc and musl, DYLD_* on macOS, and glibc's tunables (CVE-2023-4911).
	"LD_*", "DYLD_*", "GLIBC_TUNABLES",
	// Modules glibc and OpenSSL load from a directory the variable names.
	"GCONV_PATH", "LOCPATH", "NLSPATH", "GETCONF_DIR", "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
	// Which program a bare command name runs.
	"PATH",
	// Shell startup files, exported functions, and variables that run code
	// or change how a command line is split.
	"BASH_ENV", "ENV", "BASH_FUNC_*", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "IFS", "CDPATH",
	// Language runtimes' module paths, startup scripts and option variables.
	"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONBREAKPOINT", "PYTHONUSERBASE", "PYTHONEXECUTABLE",
	"PYTHONPLATLIBDIR", "PYTHONWARNINGS", "PYTHONINSPECT",
	"NODE_OPTIONS", "NODE_PATH",
	"PERL5LIB", "PERLLIB", "PERL5OPT", "PERL5DB",
	"RUBYLIB", "RUBYOPT",
	"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
	"PHPRC", "PHP_INI_SCAN_DIR",
	"LUA_*",
}

// EnvPolicy decides which variable names a spawn request may set, on top of
// Validate's rules.
type EnvPolicy struct {
	// allow, when set, is the operator's list and the only names that pass.
	allow []string
	deny  []string
}

// ParseEnvPolicy reads SPAWNER_ENV_ALLOW: names and prefixes (ending in
// "*") separated by commas or spaces. Empty means any name except those in
// DefaultEnvDeny; otherwise only the listed names pass, and "*" alone lets
// every name through.
func ParseEnvPolicy(allow string) (EnvPolicy, error) {
	entries := strings.FieldsFunc(allow, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	for _, e := range entries {
		name := strings.TrimSuffix(e, "*")
		if name != "" && !envNamePattern.MatchString(name) || strings.Contains(name, "*") {
			return EnvPolicy{}, fmt.Errorf("SPAWNER_ENV_ALLOW: %q is not a variable name or a prefix ending in *", e)
		}
	}
	if len(entries) == 0 {
		return EnvPolicy{deny: DefaultEnvDeny}, nil
	}
	return EnvPolicy{allow: entries}, nil
}

// Allowed reports whether a request may set the variable name.
func (p EnvPolicy) Allowed(name string) bool {
	if p.allow != nil {
		return matchEnv(p.allow, name)
	}
	if p.deny == nil {
		p.deny = DefaultEnvDeny // The zero policy is the default one.
	}
	return !matchEnv(p.deny, name)
}

func matchEnv(list []string, name string) bool {
	for _, e := range list {
		if prefix, ok := strings.CutSuffix(e, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if e == name {
			return true
		}
	}
	return false
}

// Check returns a CodeBadRequest error naming the first variable of env, in
// sorted order, that the policy does not allow.
func (p EnvPolicy) Check(env map[string]string) error {
	names := make([]string, 0, len(env))
	for name := range env {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if p.Allowed(name) {
			continue
		}
		if p.allow != nil {
			return Errorf(CodeBadRequest, "env: %q is not among the names this installation allows (SPAWNER_ENV_ALLOW)", name)
		}
		return Errorf(CodeBadRequest, "env: %q changes how the app's programs load, so requests may not set it; an operator can allow it with SPAWNER_ENV_ALLOW", name)
	}
	return nil
}
