package sessiontoken

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestTokenOpensOnlyItsSession(t *testing.T) {
	s, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	a, b := s.Token("session-a"), s.Token("session-b")
	if a == b || len(a) < 40 {
		t.Fatalf("tokens %q %q", a, b)
	}
	if !s.Valid("session-a", a) || s.Valid("session-b", a) || s.Valid("session-a", "") || s.Valid("session-a", a[:len(a)-1]) {
		t.Fatal("a token must open its own session and no other")
	}
	other, _ := New(bytes.Repeat([]byte{8}, 32))
	if other.Valid("session-a", a) {
		t.Fatal("another installation's secret accepted the token")
	}
	if _, err := New([]byte("short")); err == nil {
		t.Fatal("a short secret was accepted")
	}
}

func TestLoadSecretPersists(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadSecret("", dir)
	if err != nil {
		t.Fatal(err)
	}
	second, err := LoadSecret("", dir)
	if err != nil || !bytes.Equal(first, second) || len(first) != MinSecretBytes {
		t.Fatalf("secret changed between loads: %x %x %v", first, second, err)
	}
	given, err := LoadSecret("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", dir)
	if err != nil || given[1] != 0x11 {
		t.Fatalf("hex secret: %x %v", given, err)
	}
	if _, err := LoadSecret("zz", dir); err == nil {
		t.Fatal("non-hex secret accepted")
	}
}

// The secret opens every session, so only Spawner's user may read it,
// even where an older version or an operator left it open.
func TestLoadSecretKeepsItPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := LoadSecret("", dir); err != nil {
		t.Fatal(err)
	}
	assertMode := func(path string, want os.FileMode) {
		t.Helper()
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s has mode %v, want %v", filepath.Base(path), got, want)
		}
	}
	file := filepath.Join(dir, "session-secret")
	assertMode(dir, 0o700)
	assertMode(file, 0o600)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecret("", dir); err != nil {
		t.Fatal(err)
	}
	assertMode(dir, 0o700)
	assertMode(file, 0o600)
}
