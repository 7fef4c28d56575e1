package process

import (
	"net"
	"testing"
)

func TestParsePortRange(t *testing.T) {
	if lo, hi, err := parsePortRange(" 20000-29999 "); err != nil || lo != 20000 || hi != 29999 {
		t.Errorf("default range: %d-%d %v", lo, hi, err)
	}
	for _, bad := range []string{"", "5", "0-10", "10-5", "a-b", "1-65536", "-", "1--2"} {
		if _, _, err := parsePortRange(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestReservePortStaysInItsRangeAndSkipsTakenPorts: ports come from the
// range only, never one another program listens on, never one handed out.
func TestReservePortStaysInItsRangeAndSkipsTakenPorts(t *testing.T) {
	// A listener of another program on the first of three ports.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	if busy+2 > 65535 {
		t.Skip("the kernel's port is at the top of the range")
	}
	b := &Backend{cfg: Config{Host: "127.0.0.1"}, ports: map[int]bool{}, portLo: busy, portHi: busy + 2}
	got := map[int]bool{}
	for range 2 {
		port, err := b.reservePort()
		if err != nil {
			// The other two may be held by other programs; that is not ours to test.
			t.Skipf("reserve: %v", err)
		}
		if port == busy || port < busy || port > busy+2 || got[port] {
			t.Fatalf("reserved %d: busy %d, range %d-%d, had %v", port, busy, busy, busy+2, got)
		}
		got[port] = true
	}
	if port, err := b.reservePort(); err == nil {
		t.Errorf("a third port %d from a range whose every port is taken", port)
	}
}
