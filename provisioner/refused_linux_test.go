package provisioner

import (
	"net"
	"testing"
)

// refusedNow tells a closed loopback port from an open one, and leaves
// whatever it cannot tell to a dial.
func TestRefusedNow(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		ln, err := net.Listen(network, map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network])
		if err != nil {
			t.Logf("%s: %v", network, err)
			continue
		}
		addr := ln.Addr().String()
		if refusedNow(addr) {
			t.Errorf("%s: a listening port is refused", addr)
		}
		ln.Close()
		if !refusedNow(addr) {
			t.Errorf("%s: a closed port is not refused", addr)
		}
	}
	for _, addr := range []string{"192.0.2.1:80", "localhost:80", "127.0.0.1", "", "[::ffff:127.0.0.1]:x"} {
		if refusedNow(addr) {
			t.Errorf("%q: refused, want the dial to tell", addr)
		}
	}
}
