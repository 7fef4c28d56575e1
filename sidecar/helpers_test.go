package sidecar

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Headers exactly as the kernel writes them (the IPv4 one is padded).
const (
	header4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     "
	header6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
)

// hexAddr writes an address the way the kernel does: each 32-bit word as a
// host-order integer, which is independent of the parser's code path.
func hexAddr(a netip.Addr) string {
	b := a.AsSlice()
	var s string
	for i := 0; i < len(b); i += 4 {
		s += fmt.Sprintf("%08X", binary.NativeEndian.Uint32(b[i:]))
	}
	return s
}

// formatLine renders c as a kernel table line numbered sl, with the trailing
// fields of a full socket (IPv4 lines padded to 149 columns, as in tcp4_seq_show).
func formatLine(sl int, c Conn) string {
	line := fmt.Sprintf("%4d: %s:%04X %s:%04X %02X %08X:%08X %02X:%08X %08X %5d %8d %d %d %016x %d %d %d %d %d",
		sl, hexAddr(c.Local.Addr()), c.Local.Port(), hexAddr(c.Remote.Addr()), c.Remote.Port(),
		uint8(c.State), 0, 0, 0, 0, 0, 1000, 0, 40000+sl, 1, 0xffff8880_0000_0000+uint64(sl)*64, 20, 4, 30, 10, -1)
	if c.Local.Addr().Is4() {
		line = fmt.Sprintf("%-149s", line)
	}
	return line
}

// syntheticTable builds an IPv4 table of n sockets for port: one listener,
// then a realistic mix of server-side, client-side and closing connections.
// It returns the table and how many sockets should count as established.
func syntheticTable(n int, port uint16) ([]byte, int) {
	var buf bytes.Buffer
	buf.WriteString(header4 + "\n")
	app := netip.AddrFrom4([4]byte{10, 1, 2, 3})
	buf.WriteString(formatLine(0, Conn{netip.AddrPortFrom(netip.IPv4Unspecified(), port), netip.AddrPortFrom(netip.IPv4Unspecified(), 0), StateListen}) + "\n")
	want := 0
	for i := 1; i < n; i++ {
		peer := netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
		eph := uint16(32768 + i%28000)
		var c Conn
		switch i % 5 {
		case 0, 1, 2: // a client talking to the app
			c = Conn{netip.AddrPortFrom(app, port), netip.AddrPortFrom(peer, eph), StateEstablished}
			want++
		case 3: // the app calling out to a database
			c = Conn{netip.AddrPortFrom(app, eph), netip.AddrPortFrom(peer, 5432), StateEstablished}
		case 4: // a finished conversation
			c = Conn{netip.AddrPortFrom(app, port), netip.AddrPortFrom(peer, eph), StateTimeWait}
		}
		buf.WriteString(formatLine(i, c) + "\n")
	}
	return buf.Bytes(), want
}

// writeTable writes a table of conns (with header) to dir/name.
func writeTable(t testing.TB, dir, name string, conns ...Conn) string {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString(header4 + "\n")
	for i, c := range conns {
		buf.WriteString(formatLine(i, c) + "\n")
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// fakeClock is a settable clock so inactivity can be asserted exactly.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// littleEndianHost reports whether the golden files, captured on amd64, are
// in this machine's byte order.
func littleEndianHost() bool { return binary.NativeEndian.Uint16([]byte{1, 0}) == 1 }
