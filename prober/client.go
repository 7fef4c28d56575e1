package prober

import (
	"bytes"
	"fmt"
	"net/url"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/spawnerhq/spawner/messages"
)

// statusClient probes one target over one kept-alive connection. It is a
// fasthttp client rather than net/http's because an idle net/http
// connection holds two goroutines and two 4 KiB buffers: at 10,000
// sessions that was 20,000 goroutines and over 300 MB of the control
// plane's memory. An idle fasthttp connection holds only its socket.
type statusClient struct {
	hc  *fasthttp.HostClient
	uri string
	err error
}

func newStatusClient(statusURL string, cfg Config) *statusClient {
	u, err := url.Parse(statusURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &statusClient{err: fmt.Errorf("status URL %q is not an http(s) URL", statusURL)}
	}
	host := u.Host
	if u.Port() == "" {
		host += map[string]string{"http": ":80", "https": ":443"}[u.Scheme]
	}
	return &statusClient{uri: statusURL, hc: &fasthttp.HostClient{
		Addr:  host,
		IsTLS: u.Scheme == "https",
		// One connection per target, kept between rounds: reconnecting to
		// thousands of targets every interval costs more than holding them.
		MaxConns:                 1,
		MaxConnWaitTimeout:       cfg.Timeout,
		MaxIdleConnDuration:      2*cfg.Interval + time.Second,
		MaxResponseBodySize:      messages.MaxStatusBytes,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
	}}
}

// fetch reads the target's /status within timeout.
func (c *statusClient) fetch(timeout time.Duration) (messages.AppStatus, error) {
	if c.err != nil {
		return messages.AppStatus{}, c.err
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.uri)
	if err := c.hc.DoTimeout(req, resp, timeout); err != nil {
		return messages.AppStatus{}, fmt.Errorf("GET %s: %w", c.uri, err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return messages.AppStatus{}, fmt.Errorf("/status answered %d %s", resp.StatusCode(), fasthttp.StatusMessage(resp.StatusCode()))
	}
	return messages.DecodeAppStatus(bytes.NewReader(resp.Body()))
}

func (c *statusClient) close() {
	if c.hc != nil {
		c.hc.CloseIdleConnections()
	}
}

// closeClients drops every kept connection, when the prober stops.
func (p *Prober) closeClients() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.targets {
		t.client.close()
	}
}
