package process

import (
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// argvEnv is the environment the argv tests expand commands in.
var argvEnv = []string{"PORT=8123", "HOST=127.0.0.1", "EMPTY=", "SPACED=a b", "GLOB=*.go", "PORT=9000", "DIR=/opt/app"}

// shellArgv asks /bin/sh what arguments it would run the command's words
// with: the command word is replaced by a function that prints its
// arguments, each ended by NUL.
func shellArgv(t *testing.T, argv0 string, command string) []string {
	t.Helper()
	script := "argv() { for a; do printf '%s\\0' \"$a\"; done; }\n" + command
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = argvEnv
	cmd.Dir = t.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", script, err)
	}
	words := []string{argv0}
	for w := range bytes.SplitSeq(out, []byte{0}) {
		words = append(words, string(w))
	}
	return words[:len(words)-1]
}

// asShellCall rewrites a command that directArgv took so that its first
// word, as directArgv read it, becomes the call of shellArgv's function.
func asShellCall(command string, argv []string) (string, bool) {
	s := strings.TrimSpace(command)
	s = strings.TrimLeft(strings.TrimPrefix(s, "exec "), " \t")
	if !strings.HasPrefix(s, argv[0]) {
		return "", false // the first word is quoted or expanded; not comparable this way
	}
	return "argv" + s[len(argv[0]):], true
}

func TestDirectArgv(t *testing.T) {
	for _, tc := range []struct {
		command string
		want    []string
	}{
		{"app", []string{"app"}},
		{"exec /opt/app/bin/x serve --port=$PORT", []string{"/opt/app/bin/x", "serve", "--port=9000"}},
		{"exec  '/opt/my app/x'  $HOST", []string{"/opt/my app/x", "127.0.0.1"}},
		{`python3 -m http.server "$PORT" --bind ${HOST}`, []string{"python3", "-m", "http.server", "9000", "--bind", "127.0.0.1"}},
		{"app $EMPTY end", []string{"app", "end"}},
		{"app '' \"$EMPTY\"", []string{"app", "", ""}},
		{`app "$SPACED" '*'`, []string{"app", "a b", "*"}},
		{"$DIR/bin/x", []string{"/opt/app/bin/x"}},
		{"app ${PORT}x$HOST", []string{"app", "9000x127.0.0.1"}},
	} {
		got, ok := directArgv(tc.command, argvEnv)
		if !ok || !slices.Equal(got, tc.want) {
			t.Errorf("directArgv(%q) = %q, %v; want %q", tc.command, got, ok, tc.want)
		}
		if call, ok := asShellCall(tc.command, tc.want); ok {
			if sh := shellArgv(t, tc.want[0], call); !slices.Equal(sh, tc.want) {
				t.Errorf("%q: /bin/sh runs %q, the test wants %q", tc.command, sh, tc.want)
			}
		}
	}
	for _, command := range []string{
		"", "exec", "exec -a x app", "A=b app", "cd /tmp && app", "app > log", "app | tee", "app; other", "app &",
		"app $SPACED", "app $GLOB", "app *.go", "app ~/x", "echo hi", "exit 3", "[ -x app ]", "app # note",
		"app \"$(id)\"", "app `id`", "app $1", "app ${PORT:-1}", "app \"a\\b\"", "app 'open", "app \"open",
		"app\nother", "if true; then app; fi", "{ app; }", "app $", "app \\x", "$EMPTY", "'exec' app", "exec exec app",
	} {
		if got, ok := directArgv(command, argvEnv); ok {
			t.Errorf("directArgv(%q) = %q, want the shell to run it", command, got)
		}
	}
}

// Whatever a command is, directArgv either leaves it to the shell or
// gives the arguments the shell would give.
func FuzzDirectArgv(f *testing.F) {
	for _, s := range []string{"exec app --port=$PORT", `app "$HOST" 'x y' ${DIR}/z`, "app $EMPTY ''", "a=b c", "app ${X"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, command string) {
		argv, ok := directArgv(command, argvEnv)
		if !ok {
			return
		}
		if len(argv) == 0 || argv[0] == "" || shellBuiltin(argv[0]) {
			t.Fatalf("directArgv(%q) = %q", command, argv)
		}
		if strings.ContainsRune(command, 0) {
			return // the shell cannot be handed it to compare
		}
		if call, ok := asShellCall(command, argv); ok {
			if sh := shellArgv(t, argv[0], call); !slices.Equal(sh, argv) {
				t.Fatalf("directArgv(%q) = %q; /bin/sh runs %q", command, argv, sh)
			}
		}
	})
}
