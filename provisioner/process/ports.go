package process

import (
	"fmt"
	"net"
)

// reservePort finds a free port that no app of ours was given. Between
// the probe listener's close and the app's bind the kernel may offer the
// same port again, so concurrent spawns would otherwise collide.
func (b *Backend) reservePort() (int, error) {
	for range 32 {
		port, err := freePort(b.cfg.Host)
		if err != nil {
			return 0, err
		}
		b.mu.Lock()
		taken := b.ports[port]
		if !taken {
			b.ports[port] = true
		}
		b.mu.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port on %s after 32 tries", b.cfg.Host)
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
