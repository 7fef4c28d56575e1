package sidecar

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// The golden files are real tables captured with listeners on 127.0.0.1:33411,
// [::1]:45157 and a dual-stack [::]:34477, each with open, half-closed and
// closed connections. A few unrelated lines were dropped, hence gaps in sl.
type goldenConn struct {
	local, remote string
	state         State
}

var goldenTCP = []goldenConn{
	{"0.0.0.0:2024", "0.0.0.0:0", StateListen},
	{"127.0.0.1:33411", "0.0.0.0:0", StateListen},
	{"192.0.2.2:33140", "203.0.113.80:443", StateTimeWait},
	{"192.0.2.2:56350", "203.0.113.80:443", StateTimeWait},
	{"192.0.2.2:56356", "203.0.113.80:443", StateTimeWait},
	{"127.0.0.1:33411", "127.0.0.1:56032", StateCloseWait},
	{"127.0.0.1:44706", "127.0.0.1:34477", StateEstablished},
	{"127.0.0.1:41387", "127.0.0.1:57006", StateTimeWait},
	{"127.0.0.1:56032", "127.0.0.1:33411", StateFinWait2},
	{"127.0.0.1:56036", "127.0.0.1:33411", StateTimeWait},
	{"127.0.0.1:56046", "127.0.0.1:33411", StateEstablished},
	{"127.0.0.1:56056", "127.0.0.1:33411", StateEstablished},
	{"127.0.0.1:41387", "127.0.0.1:57022", StateTimeWait},
	{"127.0.0.1:56988", "127.0.0.1:41387", StateTimeWait},
	{"127.0.0.1:56996", "127.0.0.1:41387", StateTimeWait},
	{"127.0.0.1:33411", "127.0.0.1:56056", StateEstablished},
	{"127.0.0.1:33411", "127.0.0.1:56046", StateEstablished},
}

var goldenTCP6 = []goldenConn{
	{"[::]:34477", "[::]:0", StateListen},
	{"[::1]:45157", "[::]:0", StateListen},
	{"[::1]:52942", "[::1]:44543", StateTimeWait},
	{"[::1]:52952", "[::1]:44543", StateTimeWait},
	{"[::1]:45157", "[::1]:51112", StateEstablished},
	{"[::ffff:127.0.0.1]:34477", "[::ffff:127.0.0.1]:44706", StateEstablished},
	{"[::1]:44543", "[::1]:52966", StateTimeWait},
	{"[::1]:45157", "[::1]:51090", StateCloseWait},
	{"[::1]:44543", "[::1]:52958", StateTimeWait},
	{"[::1]:51090", "[::1]:45157", StateFinWait2},
	{"[::1]:51092", "[::1]:45157", StateTimeWait},
	{"[::1]:51096", "[::1]:45157", StateEstablished},
	{"[::1]:51112", "[::1]:45157", StateEstablished},
	{"[::1]:45157", "[::1]:51096", StateEstablished},
}

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	if !littleEndianHost() {
		t.Skip("golden tables were captured on a little-endian machine")
	}
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestScanTableGolden(t *testing.T) {
	for name, want := range map[string][]goldenConn{"tcp": goldenTCP, "tcp6": goldenTCP6} {
		t.Run(name, func(t *testing.T) {
			var got []Conn
			err := ScanTable(bytes.NewReader(readGolden(t, name)), func(c Conn) error {
				got = append(got, c)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("got %d sockets, want %d", len(got), len(want))
			}
			for i, w := range want {
				wc := Conn{ap(w.local), ap(w.remote), w.state}
				if got[i] != wc {
					t.Errorf("socket %d: got %v %v %v, want %v %v %v", i,
						got[i].Local, got[i].Remote, got[i].State, wc.Local, wc.Remote, wc.State)
				}
			}
		})
	}
}

func TestCountGolden(t *testing.T) {
	tests := []struct {
		file      string
		port      uint16
		est       int
		listening bool
	}{
		{"tcp", 33411, 2, true},  // two server ends; client ends and CLOSE_WAIT ignored
		{"tcp", 34477, 0, false}, // only the client end of a call to the dual-stack app
		{"tcp", 41387, 0, false}, // nothing but TIME_WAIT left
		{"tcp", 2024, 0, true},   // a listener nobody talks to
		{"tcp", 443, 0, false},   // remote port of outbound connections
		{"tcp6", 45157, 2, true},
		{"tcp6", 34477, 1, true}, // an IPv4 client of a dual-stack listener
		{"tcp6", 44543, 0, false},
	}
	for _, tt := range tests {
		est, listening, err := Count(bytes.NewReader(readGolden(t, tt.file)), tt.port)
		if err != nil {
			t.Fatal(err)
		}
		if est != tt.est || listening != tt.listening {
			t.Errorf("Count(%s, %d) = %d, %v; want %d, %v", tt.file, tt.port, est, listening, tt.est, tt.listening)
		}
	}
}

func TestStateString(t *testing.T) {
	want := []string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
		"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"}
	for i := 1; i < len(want); i++ {
		if s := State(i); s.String() != want[i] || !s.Known() {
			t.Errorf("State(%d) = %q (known %v), want %q", i, s.String(), s.Known(), want[i])
		}
	}
	for _, s := range []State{0, 0x0D, 0xFF} {
		if s.Known() {
			t.Errorf("State(%d) claims to be known", s)
		}
	}
	if got := State(0x0D).String(); got != "State(0x0D)" {
		t.Errorf("unknown state prints %q", got)
	}
}

const okLine = "   1: 0100007F:8283 0100007F:DAF8 01 00000000:00000000 02:0000058B 00000000     0        0 8811 2 0000000048b6e6ef 20 0 0 10 -1"

func TestScanTableMalformed(t *testing.T) {
	tests := []struct {
		name, line, reason string
	}{
		{"garbage", "hello world", "bad slot number"},
		{"no slot colon", "   1 0100007F:8283 0100007F:DAF8 01 0", "bad slot number"},
		{"slot not decimal", "  1a: 0100007F:8283 0100007F:DAF8 01 0", "bad slot number"},
		{"nothing after slot", "   1:", "missing local address"},
		{"no space after slot", "   1:0100007F:8283 0100007F:DAF8 01 0", "missing local address"},
		{"short IPv4", "   1: 100007F:8283 0100007F:DAF8 01 0", "neither 8 nor 32"},
		{"16-digit address", "   1: 0100007F0100007F:8283 0100007F:DAF8 01 0", "neither 8 nor 32"},
		{"bad IPv4 hex", "   1: 0100007G:8283 0100007F:DAF8 01 0", "bad IPv4 hex"},
		{"bad IPv6 hex", "   1: 000000000000000000000000010000-0:8283 00000000000000000000000001000000:DAF8 01 0", "bad IPv6 hex"},
		{"missing port", "   1: 0100007F 0100007F:DAF8 01 0", "missing port"},
		{"short port", "   1: 0100007F:828 0100007F:DAF8 01 0", "bad port"},
		{"long port", "   1: 0100007F:82830 0100007F:DAF8 01 0", "port is not 4 hex digits"},
		{"bad port hex", "   1: 0100007F:82Z3 0100007F:DAF8 01 0", "bad port"},
		{"no remote", "   1: 0100007F:8283", "missing remote address"},
		{"bad remote", "   1: 0100007F:8283 0100007F:DAFX 01 0", "remote address: bad port"},
		{"mixed families", "   1: 0100007F:8283 00000000000000000000000001000000:DAF8 01 0", "different families"},
		{"no state", "   1: 0100007F:8283 0100007F:DAF8", "missing state"},
		{"bad state hex", "   1: 0100007F:8283 0100007F:DAF8 0G 0", "bad state"},
		{"one-digit state", "   1: 0100007F:8283 0100007F:DAF8 1 0", "bad state"},
		{"three-digit state", "   1: 0100007F:8283 0100007F:DAF8 01A 0", "state is not 2 hex digits"},
		{"truncated after state", "   1: 0100007F:8283 0100007F:DAF8 01", "truncated after state"},
		{"only spaces after state", "   1: 0100007F:8283 0100007F:DAF8 01    ", "truncated after state"},
		{"NUL bytes", "   1: 0100007F:8283 \x00\x00\x00\x00\x00\x00\x00\x00:DAF8 01 0", "bad IPv4 hex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := header4 + "\n" + okLine + "\n" + tt.line + "\n" + okLine + "\n"
			calls := 0
			err := ScanTable(strings.NewReader(in), func(Conn) error { calls++; return nil })
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a *SyntaxError", err)
			}
			if se.Line != 3 || !strings.Contains(se.Reason, tt.reason) {
				t.Errorf("got line %d reason %q, want line 3 reason containing %q", se.Line, se.Reason, tt.reason)
			}
			if calls != 1 {
				t.Errorf("fn called %d times before the error, want 1", calls)
			}
			if _, _, err := Count(strings.NewReader(in), 0x8283); err == nil {
				t.Error("Count accepted the malformed table")
			}
		})
	}
}

func TestScanTableEdges(t *testing.T) {
	count := func(in string) (int, error) {
		n := 0
		err := ScanTable(strings.NewReader(in), func(Conn) error { n++; return nil })
		return n, err
	}
	for name, tt := range map[string]struct {
		in string
		n  int
	}{
		"empty":               {"", 0},
		"header only":         {header4 + "\n", 0},
		"no header":           {okLine + "\n", 1},
		"no final newline":    {header4 + "\n" + okLine, 1},
		"blank lines":         {header4 + "\n\n" + okLine + "\n   \n", 1},
		"CRLF":                {header4 + "\r\n" + okLine + "\r\n", 1},
		"lowercase hex":       {strings.ToLower(okLine), 1},
		"unknown state kept":  {strings.Replace(okLine, " 01 ", " 0D ", 1), 1},
		"tab separated":       {strings.ReplaceAll(okLine, " 0100007F:DAF8 ", "\t0100007F:DAF8\t"), 1},
		"v6 header and lines": {header6 + "\n" + strings.Repeat("   0: 00000000000000000000000001000000:B065 00000000000000000000000001000000:C7A8 01 0\n", 3), 3},
	} {
		n, err := count(tt.in)
		if err != nil || n != tt.n {
			t.Errorf("%s: got %d sockets, %v; want %d, nil", name, n, err, tt.n)
		}
	}

	// A header anywhere but the first line is not a header.
	if _, err := count(okLine + "\n" + header4 + "\n"); err == nil {
		t.Error("a header on line 2 was accepted")
	}

	// fn's error stops the scan and comes back unchanged.
	stop := errors.New("stop")
	n := 0
	err := ScanTable(strings.NewReader(okLine+"\n"+okLine+"\n"), func(Conn) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("got %v after %d calls, want stop after 1", err, n)
	}

	// A line longer than the buffer is an error, not unbounded growth.
	var se *SyntaxError
	if _, err := count(okLine + strings.Repeat(" x", readBufSize)); !errors.As(err, &se) || se.Reason != "line too long" {
		t.Errorf("overlong line: got %v", err)
	}

	// A failing reader's error is passed on.
	boom := errors.New("boom")
	if err := ScanTable(iotest.ErrReader(boom), func(Conn) error { return nil }); !errors.Is(err, boom) {
		t.Errorf("reader error: got %v", err)
	}
	// Tiny reads must give the same answer as one big read.
	est, _, err := Count(iotest.OneByteReader(strings.NewReader(header4+"\n"+okLine+"\n")), 0x8283)
	if err != nil || est != 1 {
		t.Errorf("one-byte reads: got %d, %v; want 1", est, err)
	}
	est, _, err = Count(iotest.OneByteReader(strings.NewReader(header4+"\n"+okLine+"\n")), 0xDAF8)
	if err != nil || est != 0 {
		t.Errorf("one-byte reads, remote port: got %d, %v; want 0", est, err)
	}
	est, _, err = Count(iotest.HalfReader(strings.NewReader(strings.Replace(okLine, "0100007F:8283 0100007F:DAF8", "0100007F:DAF8 0100007F:8283", 1))), 0xDAF8)
	if err != nil || est != 1 {
		t.Errorf("half reads: got %d, %v; want 1", est, err)
	}
}

func FuzzScanTable(f *testing.F) {
	if littleEndianHost() {
		for _, name := range []string{"tcp", "tcp6"} {
			b, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte(header4 + "\n" + okLine + "\n"))
	f.Add([]byte(okLine[:40]))
	f.Add([]byte("   0: 0000000000000000FFFF00000100007F:86AD 0000000000000000FFFF00000100007F:AEA2 01 0\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		var conns []Conn
		err := ScanTable(bytes.NewReader(data), func(c Conn) error {
			conns = append(conns, c)
			return nil
		})
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Line < 1 || se.Reason == "" {
				t.Fatalf("error is not a useful *SyntaxError: %v", err)
			}
		}
		var port uint16 = 0x8283
		if len(conns) > 0 {
			port = conns[0].Local.Port()
		}
		est, listening, cerr := Count(bytes.NewReader(data), port)
		if (err == nil) != (cerr == nil) {
			t.Fatalf("ScanTable error %v but Count error %v", err, cerr)
		}
		if err != nil {
			return
		}
		wantEst, wantListening := 0, false
		for _, c := range conns {
			if !c.Local.Addr().IsValid() || !c.Remote.Addr().IsValid() {
				t.Fatalf("invalid address in %v", c)
			}
			if c.Local.Addr().Is4() != c.Remote.Addr().Is4() {
				t.Fatalf("mixed families in %v", c)
			}
			// Writing the socket back out and parsing it again must give
			// the same ports, state and addresses.
			var back []Conn
			if err := ScanTable(strings.NewReader(formatLine(0, c)), func(c Conn) error {
				back = append(back, c)
				return nil
			}); err != nil || len(back) != 1 || back[0] != c {
				t.Fatalf("round trip of %v %v %v: got %v, %v", c.Local, c.Remote, c.State, back, err)
			}
			if c.Local.Port() == port && c.State == StateEstablished {
				wantEst++
			}
			if c.Local.Port() == port && c.State == StateListen {
				wantListening = true
			}
		}
		if est != wantEst || listening != wantListening {
			t.Fatalf("Count = %d, %v; sockets say %d, %v", est, listening, wantEst, wantListening)
		}
	})
}
