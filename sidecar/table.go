package sidecar

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"sync"
)

// State is a TCP socket state as the kernel numbers it in include/net/tcp_states.h.
type State uint8

// The TCP states that appear in /proc/net/tcp, in the kernel's numbering.
const (
	StateEstablished State = 0x01
	StateSynSent     State = 0x02
	StateSynRecv     State = 0x03
	StateFinWait1    State = 0x04
	StateFinWait2    State = 0x05
	StateTimeWait    State = 0x06
	StateClose       State = 0x07
	StateCloseWait   State = 0x08
	StateLastAck     State = 0x09
	StateListen      State = 0x0A
	StateClosing     State = 0x0B
	StateNewSynRecv  State = 0x0C // a half-open request socket, listed since Linux 4.4
)

var stateNames = [...]string{
	StateEstablished: "ESTABLISHED",
	StateSynSent:     "SYN_SENT",
	StateSynRecv:     "SYN_RECV",
	StateFinWait1:    "FIN_WAIT1",
	StateFinWait2:    "FIN_WAIT2",
	StateTimeWait:    "TIME_WAIT",
	StateClose:       "CLOSE",
	StateCloseWait:   "CLOSE_WAIT",
	StateLastAck:     "LAST_ACK",
	StateListen:      "LISTEN",
	StateClosing:     "CLOSING",
	StateNewSynRecv:  "NEW_SYN_RECV",
}

// Known reports whether s is one of the states this package names.
func (s State) Known() bool { return int(s) < len(stateNames) && stateNames[s] != "" }

// String returns the kernel's name for s, or State(0xNN) for an unknown one.
func (s State) String() string {
	if s.Known() {
		return stateNames[s]
	}
	return fmt.Sprintf("State(0x%02X)", uint8(s))
}

// Conn is one socket from a kernel TCP table.
//
// IPv6 tables report IPv4 clients of a dual-stack listener as IPv4-mapped
// addresses; they are kept as such so the table's family stays visible.
type Conn struct {
	Local  netip.AddrPort // this end: the app's port for a client of the app
	Remote netip.AddrPort // the peer; unspecified for a listener
	State  State
}

// SyntaxError reports a line of a TCP table that could not be parsed.
type SyntaxError struct {
	Line   int    // 1-based line number in the input
	Reason string // what was wrong
	Text   string // the start of the offending line, for the log
}

// Error implements error.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("sidecar: tcp table line %d: %s: %q", e.Line, e.Reason, e.Text)
}

// readBufSize is large because /proc seq files return at most one read
// buffer per syscall, and 10,000 sockets are over a megabyte of text. It is
// also the longest line accepted, so a corrupt input cannot make the buffer
// grow without limit; real lines are under 200 bytes.
const readBufSize = 64 << 10

// bufPool lets polls reuse read buffers instead of allocating 64 KiB each.
var bufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// ScanTable parses a /proc/net/tcp or /proc/net/tcp6 table from r and calls
// fn for each socket, stopping at the first error fn returns. It works line by
// line in a reused buffer and does not allocate per line, so it is cheap
// even for tables of tens of thousands of sockets. The header line is
// skipped; blank lines are ignored; any other line that does not parse
// yields a *SyntaxError. A well-formed state the package does not know is
// passed on rather than rejected, so that a state added by a future kernel
// cannot make every poll fail.
func ScanTable(r io.Reader, fn func(Conn) error) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	sc := bufio.NewScanner(r)
	sc.Buffer(*bp, len(*bp))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if n == 1 && isHeader(line) {
			continue
		}
		if isBlank(line) {
			continue
		}
		c, reason := parseLine(line)
		if reason != "" {
			return syntaxError(n, reason, line)
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return syntaxError(n+1, "line too long", sc.Bytes())
		}
		return fmt.Errorf("sidecar: reading tcp table: %w", err)
	}
	return nil
}

// Count reads a TCP table and returns how many ESTABLISHED sockets have port
// as their local port, and whether a socket is listening on it. See the
// package documentation for why nothing else counts.
func Count(r io.Reader, port uint16) (established int, listening bool, err error) {
	err = ScanTable(r, func(c Conn) error {
		if c.Local.Port() != port {
			return nil
		}
		switch c.State {
		case StateEstablished:
			established++
		case StateListen:
			listening = true
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return established, listening, nil
}

func syntaxError(line int, reason string, text []byte) error {
	const maxText = 80
	if len(text) > maxText {
		text = text[:maxText]
	}
	return &SyntaxError{Line: line, Reason: reason, Text: string(text)}
}

func isHeader(line []byte) bool {
	i := skipSpaces(line, 0)
	return len(line) >= i+2 && line[i] == 's' && line[i+1] == 'l'
}

func isBlank(line []byte) bool { return skipSpaces(line, 0) == len(line) }

func skipSpaces(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

// parseLine decodes the fields that matter of one table line. It returns a
// constant reason instead of an error so the success path never allocates.
//
// The kernel writes "%4d: %08X:%04X %08X:%04X %02X ..." (the address is
// %08X%08X%08X%08X in tcp6); the fields after the state are not needed but
// must be present, so a truncated line is caught rather than half-read.
func parseLine(line []byte) (Conn, string) {
	var c Conn
	i := skipSpaces(line, 0)
	j := i
	for j < len(line) && line[j] >= '0' && line[j] <= '9' {
		j++
	}
	if j == i || j >= len(line) || line[j] != ':' {
		return c, "bad slot number"
	}
	i, ok := needSpace(line, j+1)
	if !ok {
		return c, "missing local address"
	}
	local, i, reason := parseAddrPort(line, i)
	if reason != "" {
		return c, "local address: " + reason
	}
	if i, ok = needSpace(line, i); !ok {
		return c, "missing remote address"
	}
	remote, i, reason := parseAddrPort(line, i)
	if reason != "" {
		return c, "remote address: " + reason
	}
	if local.Addr().Is4() != remote.Addr().Is4() {
		return c, "local and remote addresses of different families"
	}
	if i, ok = needSpace(line, i); !ok {
		return c, "missing state"
	}
	st, ok := parseHex(line, i, 2)
	if !ok {
		return c, "bad state"
	}
	if i += 2; i < len(line) && line[i] != ' ' && line[i] != '\t' {
		return c, "state is not 2 hex digits"
	}
	if _, ok = needSpace(line, i); !ok {
		return c, "truncated after state"
	}
	c.Local, c.Remote, c.State = local, remote, State(st)
	return c, ""
}

// needSpace skips the separator before a field, which must exist, and
// reports whether a field follows it.
func needSpace(b []byte, i int) (int, bool) {
	if i >= len(b) || (b[i] != ' ' && b[i] != '\t') {
		return i, false
	}
	i = skipSpaces(b, i)
	return i, i < len(b)
}

// parseAddrPort decodes "AAAAAAAA:PPPP" or the 32-digit IPv6 form. The
// kernel prints each 32-bit word of the address as a host-order integer, so
// the bytes are recovered in native byte order (little-endian on amd64 and
// arm64, which is why 127.0.0.1 reads as 0100007F there).
func parseAddrPort(b []byte, i int) (netip.AddrPort, int, string) {
	start := i
	for i < len(b) && b[i] != ':' && b[i] != ' ' {
		i++
	}
	if i >= len(b) || b[i] != ':' {
		return netip.AddrPort{}, i, "missing port"
	}
	var addr netip.Addr
	switch i - start {
	case 8:
		w, ok := parseHex(b, start, 8)
		if !ok {
			return netip.AddrPort{}, i, "bad IPv4 hex"
		}
		var a [4]byte
		binary.NativeEndian.PutUint32(a[:], uint32(w))
		addr = netip.AddrFrom4(a)
	case 32:
		var a [16]byte
		for k := range 4 {
			w, ok := parseHex(b, start+8*k, 8)
			if !ok {
				return netip.AddrPort{}, i, "bad IPv6 hex"
			}
			binary.NativeEndian.PutUint32(a[4*k:], uint32(w))
		}
		addr = netip.AddrFrom16(a)
	default:
		return netip.AddrPort{}, i, "address is neither 8 nor 32 hex digits"
	}
	port, ok := parseHex(b, i+1, 4)
	if !ok {
		return netip.AddrPort{}, i, "bad port"
	}
	i += 5
	if i < len(b) && b[i] != ' ' && b[i] != '\t' {
		return netip.AddrPort{}, i, "port is not 4 hex digits"
	}
	return netip.AddrPortFrom(addr, uint16(port)), i, ""
}

// parseHex decodes exactly n hex digits at b[i:]. strconv.ParseUint would
// need a string, and converting would allocate on every line.
func parseHex(b []byte, i, n int) (uint64, bool) {
	if i < 0 || n > 16 || len(b)-i < n {
		return 0, false
	}
	var v uint64
	for _, ch := range b[i : i+n] {
		d := hexVal[ch]
		if d < 0 {
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

var hexVal = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i, ch := range "0123456789ABCDEF" {
		t[ch] = int8(i)
	}
	for i, ch := range "abcdef" {
		t[ch] = int8(10 + i)
	}
	return t
}()
