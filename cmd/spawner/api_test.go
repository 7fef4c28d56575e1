package main

import (
	"net"
	"os"
	"strings"
	"testing"
)

// TestCLIFindsASpawnerOnAnotherPortFromItsHTTPAddr runs the CLI as a user
// who started Spawner with SPAWNER_HTTP_ADDR=:<port> and set nothing else.
func TestCLIFindsASpawnerOnAnotherPortFromItsHTTPAddr(t *testing.T) {
	url := startSpawner(t)
	_, port, err := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
	if err != nil || port == "8080" {
		t.Fatalf("spawner at %s: want a port other than the default", url)
	}
	t.Setenv("SPAWNER_API_URL", "")
	os.Unsetenv("SPAWNER_API_URL")
	t.Setenv("SPAWNER_HTTP_ADDR", ":"+port)

	out, err := cli(t, "sessions", "new", "--key", "other-port")
	if err != nil || !strings.Contains(out, "ready") {
		t.Fatalf("sessions new with only SPAWNER_HTTP_ADDR=:%s: %q (%v)", port, out, err)
	}
	out, err = cli(t, "sessions", "ls")
	if err != nil || !strings.Contains(out, "other-port") {
		t.Fatalf("sessions ls with only SPAWNER_HTTP_ADDR=:%s: %q (%v)", port, out, err)
	}
}

func TestCLISaysWhichAddressRefusedAndHowToChangeIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	t.Setenv("SPAWNER_API_URL", "")
	os.Unsetenv("SPAWNER_API_URL")
	t.Setenv("SPAWNER_HTTP_ADDR", addr)
	for _, args := range [][]string{{"sessions", "ls"}, {"sessions", "rm", "aaaaaaaaaaaaaaaaaaaaaaaaaa"}, {"events"}} {
		_, err := cli(t, args...)
		if err == nil {
			t.Fatalf("%v against %s succeeded", args, addr)
		}
		for _, want := range []string{"http://" + addr, "SPAWNER_HTTP_ADDR=" + addr, "--api", "SPAWNER_API_URL"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%v: error %q lacks %q", args, err, want)
			}
		}
	}
	_, err = cli(t, "sessions", "ls", "--api", "http://"+addr)
	if err == nil || !strings.Contains(err.Error(), "(from --api)") {
		t.Errorf("with --api: error %v, want it to name --api as the source", err)
	}
}

func TestDefaultAPI(t *testing.T) {
	for _, c := range []struct {
		env       map[string]string
		url, from string
	}{
		{nil, "http://127.0.0.1:8080", "the default SPAWNER_HTTP_ADDR=:8080"},
		{map[string]string{"SPAWNER_HTTP_ADDR": ":9090"}, "http://127.0.0.1:9090", "SPAWNER_HTTP_ADDR=:9090"},
		{map[string]string{"SPAWNER_HTTP_ADDR": "0.0.0.0:9090"}, "http://127.0.0.1:9090", "SPAWNER_HTTP_ADDR=0.0.0.0:9090"},
		{map[string]string{"SPAWNER_HTTP_ADDR": "[::1]:9090"}, "http://[::1]:9090", "SPAWNER_HTTP_ADDR=[::1]:9090"},
		{map[string]string{"SPAWNER_HTTP_ADDR": "10.0.0.5:80"}, "http://10.0.0.5:80", "SPAWNER_HTTP_ADDR=10.0.0.5:80"},
		{map[string]string{"SPAWNER_HTTP_ADDR": ":9090", "SPAWNER_API_URL": "https://spawner.example"}, "https://spawner.example", "SPAWNER_API_URL"},
	} {
		url, from := defaultAPI(func(k string) string { return c.env[k] })
		if url != c.url || from != c.from {
			t.Errorf("%v: %q from %q, want %q from %q", c.env, url, from, c.url, c.from)
		}
	}
}

// TestAPIURLFromListenKeepsThePort checks that any SPAWNER_HTTP_ADDR,
// even a malformed one, gives an http URL, and that a host:port one keeps
// its port.
func TestAPIURLFromListenKeepsThePort(t *testing.T) {
	for _, addr := range []string{":8080", "0.0.0.0:1", "[::]:9090", "[::1]:80", "host", "", "a:b:c", "[::1", "::8080", "localhost:http"} {
		url := apiURLFromListen(addr)
		if !strings.HasPrefix(url, "http://") {
			t.Errorf("%q gave %q", addr, url)
		}
		if _, port, err := net.SplitHostPort(addr); err == nil && !strings.HasSuffix(url, ":"+port) {
			t.Errorf("%q gave %q, which lost port %q", addr, url, port)
		}
	}
}
