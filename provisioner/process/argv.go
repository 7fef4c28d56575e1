package process

import (
	"strings"
)

// directArgv turns an app command into the arguments /bin/sh would run
// it with, when the command is simple enough that the shell would only
// split it into words and expand variables from env: words of plain
// characters, single- or double-quoted strings, and $NAME or ${NAME},
// after an optional "exec". Anything else (a builtin, a redirection, a
// pipe, a glob, a variable whose value the shell would split further)
// gets ok false, and runs through the shell as before.
//
// Under isolation the helper execs such a command itself: on a 2-core
// machine the shell's start (its dynamic loading, then a fork for the
// app) was 4-5 ms of every spawn, against about 1 ms for the app's own
// exec (BENCHMARKS.md, spawn readiness).
func directArgv(command string, env []string) (argv []string, ok bool) {
	s := strings.TrimSpace(command)
	if strings.ContainsAny(s, "\n\r") {
		return nil, false
	}
	first, sawExec := true, false
	for s != "" {
		word, kept, rest, ok := shellWord(s, env)
		if !ok {
			return nil, false
		}
		raw := s[:len(s)-len(rest)]
		s = strings.TrimLeft(rest, " \t")
		if first {
			if raw == "exec" && !sawExec {
				sawExec = true
				continue // "exec app" runs app, as the helper does anyway
			}
			// An assignment ("A=b app"), an option of exec's, a builtin
			// or a keyword: only the shell knows what they mean.
			if strings.Contains(raw, "=") || strings.HasPrefix(raw, "-") || shellBuiltin(word) {
				return nil, false
			}
		}
		if kept {
			argv = append(argv, word)
			first = false
		}
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, false
	}
	return argv, true
}

// shellWord reads one word from the start of s. kept is false for a word
// the shell would drop: one of unquoted expansions that came out empty.
func shellWord(s string, env []string) (word string, kept bool, rest string, ok bool) {
	var b strings.Builder
	quoted := false
	for s != "" && s[0] != ' ' && s[0] != '\t' {
		switch c := s[0]; {
		case c == '\'':
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return "", false, "", false
			}
			b.WriteString(s[1 : 1+end])
			s, quoted = s[2+end:], true
		case c == '"':
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return "", false, "", false
			}
			inner, err := expandQuoted(s[1:1+end], env)
			if !err {
				return "", false, "", false
			}
			b.WriteString(inner)
			s, quoted = s[2+end:], true
		case c == '$':
			name, n := varRef(s)
			if n == 0 {
				return "", false, "", false
			}
			v := lookupEnv(env, name)
			// Unquoted, the shell would split a value at blanks and
			// expand its globs; such a command goes through the shell.
			if strings.ContainsAny(v, " \t\n*?[") {
				return "", false, "", false
			}
			b.WriteString(v)
			s = s[n:]
		case plainChar(c):
			b.WriteByte(c)
			s = s[1:]
		default:
			return "", false, "", false
		}
	}
	return b.String(), quoted || b.Len() > 0, s, true
}

// expandQuoted expands what is between double quotes: plain text and
// $NAME or ${NAME}; a backslash or a command substitution fails it.
func expandQuoted(s string, env []string) (string, bool) {
	var b strings.Builder
	for s != "" {
		switch s[0] {
		case '\\', '`':
			return "", false
		case '$':
			name, n := varRef(s)
			if n == 0 {
				return "", false
			}
			b.WriteString(lookupEnv(env, name))
			s = s[n:]
		default:
			b.WriteByte(s[0])
			s = s[1:]
		}
	}
	return b.String(), true
}

// varRef reads $NAME or ${NAME} at the start of s, with n the bytes it
// took; n is 0 for any other use of "$".
func varRef(s string) (name string, n int) {
	if strings.HasPrefix(s, "${") {
		end := strings.IndexByte(s, '}')
		if end < 0 || !validName(s[2:end]) {
			return "", 0
		}
		return s[2:end], end + 1
	}
	i := 1
	for i < len(s) && nameChar(s[i], i == 1) {
		i++
	}
	if i == 1 {
		return "", 0
	}
	return s[1:i], i
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameChar(s[i], i == 0) {
			return false
		}
	}
	return true
}

func nameChar(c byte, first bool) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
}

// plainChar lists the characters that mean nothing to the shell outside
// quotes.
func plainChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_./-=:,+@%^", c) >= 0
}

// lookupEnv finds name in env as the shell would: the last of several
// wins, and an unset variable is empty.
func lookupEnv(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

// shellBuiltin reports whether w is one of dash's builtins or reserved
// words, which a command must run through the shell to mean what it says.
func shellBuiltin(w string) bool {
	switch w {
	case ".", ":", "[", "alias", "bg", "break", "cd", "chdir", "command", "continue", "echo", "eval", "exec",
		"exit", "export", "false", "fc", "fg", "getopts", "hash", "jobs", "kill", "local", "printf", "pwd",
		"read", "readonly", "return", "set", "shift", "test", "times", "trap", "true", "type", "ulimit",
		"umask", "unalias", "unset", "wait", "!", "{", "}", "case", "do", "done", "elif", "else", "esac",
		"fi", "for", "function", "if", "in", "select", "then", "time", "until", "while":
		return true
	}
	return false
}
