package messages_test

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/spawnerhq/spawner/messages"
)

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

func TestNewSessionID(t *testing.T) {
	seen := map[string]bool{}
	// Every bit position must vary across IDs, or the ID carries less
	// than 128 bits of randomness.
	var ones, zeros [16]byte
	for range 2000 {
		id := messages.NewSessionID()
		if len(id) != 26 {
			t.Fatalf("NewSessionID() = %q, %d chars; want 26", id, len(id))
		}
		if !messages.ValidSessionID(id) {
			t.Fatalf("ValidSessionID(%q) = false for a fresh ID", id)
		}
		if seen[id] {
			t.Fatalf("NewSessionID repeated %q", id)
		}
		seen[id] = true
		raw := decodeID(t, id)
		for i, b := range raw {
			ones[i] |= b
			zeros[i] |= ^b
		}
	}
	for i := range 16 {
		if ones[i] != 0xff || zeros[i] != 0xff {
			t.Errorf("byte %d of the ID never varies in some bits: ones %08b zeros %08b", i, ones[i], zeros[i])
		}
	}
}

// decodeID undoes NewSessionID's encoding and checks it holds 16 bytes.
func decodeID(t *testing.T, id string) []byte {
	t.Helper()
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	var bits uint64
	var n int
	var out []byte
	for _, c := range id {
		v := strings.IndexRune(alphabet, c)
		if v < 0 {
			t.Fatalf("%q holds %q, outside the alphabet", id, c)
		}
		bits = bits<<5 | uint64(v)
		n += 5
		if n >= 8 {
			out = append(out, byte(bits>>(n-8)))
			n -= 8
		}
	}
	if len(out) != 16 {
		t.Fatalf("%q decodes to %d bytes, want 16", id, len(out))
	}
	if bits&(1<<n-1) != 0 {
		t.Fatalf("%q has non-zero padding bits", id)
	}
	return out
}

func TestValidSessionID(t *testing.T) {
	valid := strings.Repeat("a", 26)
	for id, want := range map[string]bool{
		valid:                             true,
		"abcdefghijklmnopqrstuvwxyz":      true,
		"234567234567234567234567ab":      true,
		"":                                false,
		strings.Repeat("a", 25):           false,
		strings.Repeat("a", 27):           false,
		"Abcdefghijklmnopqrstuvwxyz":      false,
		"abcdefghijklmnopqrstuvwxy1":      false,
		"abcdefghijklmnopqrstuvwxy8":      false,
		"abcdefghijklmnopqrstuvwxy.":      false,
		"abcdefghijklmnopqrstuvwxy/":      false,
		"abcdefghijklmnopqrstuvwxy*":      false,
		"abcdefghijklmnopqrstuvwxy>":      false,
		"abcdefghijklmnopqrstuvwxyé"[:26]: false,
		valid + "\n":                      false,
		"../../../../../../../../ab":      false,
	} {
		if got := messages.ValidSessionID(id); got != want {
			t.Errorf("ValidSessionID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestDecodeAppStatus(t *testing.T) {
	tests := []struct {
		name string
		body string
		want messages.AppStatus
		ok   bool
	}{
		{"document", `{"active_connections":2,"seconds_inactive":30,"listening":true}`, messages.AppStatus{ActiveConnections: 2, SecondsInactive: 30, Listening: true}, true},
		{"unknown fields from the app", `{"listening":true,"version":"1.2","extra":{"a":[1,2]}}`, messages.AppStatus{Listening: true}, true},
		{"trailing newline", "{\"listening\":true}\n", messages.AppStatus{Listening: true}, true},
		{"empty object", `{}`, messages.AppStatus{}, true},
		{"empty body", ``, messages.AppStatus{}, false},
		{"html", `<html>oops</html>`, messages.AppStatus{}, false},
		{"negative connections", `{"active_connections":-1}`, messages.AppStatus{}, false},
		{"negative inactivity", `{"seconds_inactive":-1}`, messages.AppStatus{}, false},
		{"wrong type", `{"listening":"yes"}`, messages.AppStatus{}, false},
		{"trailing data", `{"listening":true} {}`, messages.AppStatus{}, false},
		{"over the limit", `{"listening":true,"pad":"` + strings.Repeat("x", messages.MaxStatusBytes) + `"}`, messages.AppStatus{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := messages.DecodeAppStatus(strings.NewReader(tt.body))
			if (err == nil) != tt.ok {
				t.Fatalf("DecodeAppStatus(%.60q) = %+v, %v; want ok=%v", tt.body, got, err, tt.ok)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeAppStatusReadError(t *testing.T) {
	if _, err := messages.DecodeAppStatus(iotest.ErrReader(io.ErrUnexpectedEOF)); err == nil {
		t.Fatal("a failed read was accepted")
	}
}

// TestDecodeAppStatusHugeGarbage checks that a 10 MB answer is rejected
// after reading at most the limit, so a hostile app cannot make the prober
// buffer it.
func TestDecodeAppStatusHugeGarbage(t *testing.T) {
	r := &countingReader{r: bytes.NewReader(bytes.Repeat([]byte("{\"a\":["), 10<<20/6))}
	if _, err := messages.DecodeAppStatus(r); err == nil {
		t.Fatal("10 MB of garbage was accepted")
	}
	if r.n > messages.MaxStatusBytes+1 {
		t.Errorf("read %d bytes, want at most %d", r.n, messages.MaxStatusBytes+1)
	}
}

func TestDecodeSpawnRequestHugeGarbage(t *testing.T) {
	_, err := messages.DecodeSpawnRequest(bytes.Repeat([]byte{0xff, '{', '"'}, 10<<20/3))
	if e, ok := err.(*messages.Error); !ok || e.Code != messages.CodeTooLarge {
		t.Fatalf("10 MB of garbage: %v, want too_large", err)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
