package sidecar

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// netnsPortEnv tells the test binary that it is the helper inside the
// namespace and which port to listen on there.
const netnsPortEnv = "SIDECAR_TEST_NETNS_PORT"

// TestWatcherNetns proves that a watcher sees exactly the namespace whose
// table it reads: the same port number is busy in two namespaces with
// different numbers of clients, and each watcher counts only its own.
func TestWatcherNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating a network namespace needs root")
	}
	ipCmd, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("the ip command is not installed")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	name := "spawner-test-" + randomHex(t)
	if out, err := exec.Command(ipCmd, "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ipCmd, "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("deleting namespace %s: %v: %s", name, err, out)
		}
	})
	// A new namespace's loopback is down; the helper needs it to connect.
	if out, err := exec.Command(ipCmd, "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("bringing up lo: %v: %s", err, out)
	}

	// Two clients in the root namespace.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}

	// One client in the new namespace, on the same port number.
	cmd := exec.Command(ipCmd, "netns", "exec", name, self, "-test.run=^TestHelperInNetns$")
	cmd.Env = append(os.Environ(), netnsPortEnv+"="+strconv.Itoa(port))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the helper exits on EOF
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	pid := readReady(t, stdout)

	root := mustStatus(t, mustWatcher(t, port, nil, DefaultTables))
	if root.ActiveConnections != 2 || !root.Listening {
		t.Errorf("root namespace: got %+v, want 2 connections and listening", root)
	}
	inside := mustStatus(t, mustWatcher(t, port, nil, ProcTables(pid)))
	if inside.ActiveConnections != 1 || !inside.Listening {
		t.Errorf("helper's namespace: got %+v, want 1 connection and listening", inside)
	}
}

// TestHelperInNetns is the process TestWatcherNetns starts inside the
// namespace; run directly, it skips.
func TestHelperInNetns(t *testing.T) {
	portStr := os.Getenv(netnsPortEnv)
	if portStr == "" {
		t.Skip("only runs inside the namespace created by TestWatcherNetns")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+portStr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fmt.Printf("ready %d\n", os.Getpid())

	// Hold the sockets open until the parent closes stdin, or gives up.
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
	}
}

func readReady(t *testing.T, r io.Reader) int {
	t.Helper()
	type result struct {
		pid int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				pid, err := strconv.Atoi(rest)
				ch <- result{pid, err}
				go func() { _, _ = io.Copy(io.Discard, r) }() // keep the pipe drained
				return
			}
		}
		ch <- result{0, fmt.Errorf("helper exited without becoming ready: %v", sc.Err())}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatal(res.err)
		}
		return res.pid
	case <-time.After(30 * time.Second):
		t.Fatal("helper did not become ready")
		return 0
	}
}

func randomHex(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
