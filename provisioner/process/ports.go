package process

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
)

// reservePort finds a port of the range that is free and that no app of
// ours was given. An app may bind its port some time after this check,
// so the ports handed out are remembered until their session ends.
func (b *Backend) reservePort() (int, error) {
	span := b.portHi - b.portLo + 1
	for range min(64, span) {
		port := b.portLo + rand.IntN(span)
		b.mu.Lock()
		taken := b.ports[port]
		if !taken {
			b.ports[port] = true
		}
		b.mu.Unlock()
		if taken {
			continue
		}
		if free(b.cfg.Host, port) {
			return port, nil
		}
		b.mu.Lock()
		delete(b.ports, port)
		b.mu.Unlock()
	}
	return 0, fmt.Errorf("no free port in %d-%d on %s after %d tries", b.portLo, b.portHi, b.cfg.Host, min(64, span))
}

// free reports whether nothing listens on, or holds, host:port.
func free(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// parsePortRange reads "first-last", two ports with first <= last.
func parsePortRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	first, err1 := strconv.Atoi(strings.TrimSpace(a))
	last, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || first < 1 || last > 65535 || last < first {
		return 0, 0, errors.New("want first-last, such as 20000-29999")
	}
	return first, last, nil
}
