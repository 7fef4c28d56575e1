package process

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseUIDRange(t *testing.T) {
	first, last, err := parseUIDRange(" 2000000000-2000065535 ")
	if err != nil || first != 2000000000 || last != 2000065535 {
		t.Errorf("default range: %d-%d %v", first, last, err)
	}
	for _, bad := range []string{"", "5", "0-10", "10-5", "a-b", "1-4294967295", "-", "1--2"} {
		if _, _, err := parseUIDRange(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseUIDRange(f *testing.F) {
	for _, s := range []string{"2000000000-2000065535", "1-1", "0-0", "9-3", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, err := parseUIDRange(s)
		if err == nil && (first == 0 || last < first || last == 1<<32-1) {
			t.Errorf("%q gave %d-%d", s, first, last)
		}
	})
}

func TestAppBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "my app")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for cmd, want := range map[string]string{
		"'" + bin + "' demo":        bin,
		`"` + bin + `" demo`:        bin,
		"exec '" + bin + "' --x":    bin,
		plain + " demo":             plain,
		plain:                       plain,
		"python3 -m http.server":    "",
		"./relative demo":           "",
		"/nonexistent/spawner demo": "",
		`"$HOME/bin/app"`:           "",
		plain + ";rm -rf /":         "",
		dir + " demo":               "", // a directory is not a program
	} {
		if got := appBinary(cmd); got != want {
			t.Errorf("appBinary(%q) = %q, want %q", cmd, got, want)
		}
	}
}

func FuzzAppBinary(f *testing.F) {
	for _, s := range []string{"'/bin/sh' -c x", "/bin/sh", `"/bin/sh`, "exec ", "'", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appBinary(s)
		if got != "" && (!filepath.IsAbs(got) || strings.ContainsAny(got, "'\"$")) {
			t.Errorf("appBinary(%q) = %q", s, got)
		}
	})
}
