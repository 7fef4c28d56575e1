package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"syscall"
)

// defaultAPI is the gateway's URL when --api is not given: SPAWNER_API_URL,
// else the local address of the gateway this machine's SPAWNER_HTTP_ADDR
// configures, so the CLI finds a Spawner started with the same settings.
func defaultAPI(getenv func(string) string) (url, from string) {
	if u := getenv("SPAWNER_API_URL"); u != "" {
		return u, "SPAWNER_API_URL"
	}
	if addr := getenv("SPAWNER_HTTP_ADDR"); addr != "" {
		return apiURLFromListen(addr), "SPAWNER_HTTP_ADDR=" + addr
	}
	return apiURLFromListen(":8080"), "the default SPAWNER_HTTP_ADDR=:8080"
}

// apiURLFromListen turns a listen address into the URL that reaches it
// from this machine: an unspecified host becomes the loopback address.
func apiURLFromListen(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// explain adds, to an error of a connection nobody accepted, the address
// tried, where it came from and how to choose another.
func (o *cliOptions) explain(err error) error {
	if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		return err
	}
	from := o.apiFrom
	if o.fs != nil {
		o.fs.Visit(func(f *flag.Flag) {
			if f.Name == "api" {
				from = "--api"
			}
		})
	}
	return fmt.Errorf("no Spawner answers at %s (from %s): %w\n"+
		"Start one (make run), or point the CLI at yours with --api URL or SPAWNER_API_URL;\n"+
		"without either it uses the address in SPAWNER_HTTP_ADDR", o.api, from, err)
}
