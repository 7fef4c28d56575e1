package app

import (
	"context"
	"fmt"
	"net"

	"github.com/oklog/run"

	"github.com/spawnerhq/spawner/internal/metrics"
	"github.com/spawnerhq/spawner/internal/registry"
)

// MetricsAddr is the address of the SPAWNER_METRICS_ADDR listener, once
// started; empty when there is none.
func (m *Main) MetricsAddr() string { return m.metricsAddr }

// addMetrics keeps the live-session gauge where a gateway runs and serves
// /metrics on SPAWNER_METRICS_ADDR when it is set.
func (m *Main) addMetrics(ctx context.Context, g *run.Group, mode Mode, mx *metrics.Metrics, cache *registry.Cache) error {
	if mode == ModeAll || mode == ModeGateway {
		addActor(ctx, g, func(ctx context.Context) error { mx.WatchSessions(ctx, cache); return nil })
	}
	addr := m.Config.Common.MetricsAddr
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	m.metricsAddr = ln.Addr().String()
	addActor(ctx, g, func(ctx context.Context) error { return mx.Serve(ctx, ln, m.Log) })
	return nil
}
