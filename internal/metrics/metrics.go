// Package metrics holds Spawner's Prometheus collectors. Main creates one
// Metrics with its own registry and hands it to each component through its
// Config; a nil *Metrics is valid and records nothing, so components and
// their tests work without it.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spawnerhq/spawner/messages"
)

// Namespace prefixes every metric name.
const Namespace = "spawner"

// Spawn failure reasons, the values of the reason label of
// spawner_spawn_failures_total.
const (
	FailCapacity  = "capacity"
	FailTimeout   = "timeout"
	FailBackend   = "backend"
	FailCancelled = "cancelled"
	FailRegistry  = "registry"
)

// Metrics is the set of collectors of one process.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler

	sessions       *prometheus.GaugeVec
	spawnDuration  *prometheus.HistogramVec
	spawnFailures  *prometheus.CounterVec
	spawnsInFlight prometheus.Gauge
	spawnQueue     atomic.Pointer[func() int]
	terminations   *prometheus.CounterVec
	reaps          *prometheus.CounterVec
	probeDuration  prometheus.Histogram
	probeFailures  prometheus.Counter
	proxyRequests  *prometheus.CounterVec
	proxyBytes     *prometheus.CounterVec
	proxyIn        prometheus.Counter
	proxyOut       prometheus.Counter
	proxySockets   prometheus.Gauge
	eventStreams   prometheus.Gauge
	pool           *prometheus.GaugeVec
}

// SetPool records the pool this process serves in spawner_pool_info.
func (m *Metrics) SetPool(pool string) {
	if m == nil {
		return
	}
	m.pool.Reset()
	m.pool.WithLabelValues(pool).Set(1)
}

// New creates the collectors on a registry of their own, with the Go
// runtime and process collectors beside them.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{reg: reg}
	m.sessions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "sessions",
		Help: "Live sessions in the registry, by status and catalog app.",
	}, []string{"status", "app"})
	m.spawnDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "spawn_duration_seconds",
		Help: "Time from a spawn request to a ready session (outcome=ready) or to its failure (outcome=failed).",
		// Local processes start in tens of milliseconds, pods and
		// containers in seconds, so the buckets span both.
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120},
	}, []string{"outcome"})
	m.spawnFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "spawn_failures_total",
		Help: "Spawn requests that did not produce a session, by reason.",
	}, []string{"reason"})
	m.spawnsInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "spawns_in_flight",
		Help: "Spawns this process is working on now.",
	})
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "spawn_queue_depth",
		Help: "Spawn requests received and waiting for a free worker.",
	}, func() float64 {
		if fn := m.spawnQueue.Load(); fn != nil {
			return float64((*fn)())
		}
		return 0
	})
	m.terminations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "sessions_terminated_total",
		Help: "Sessions ended by the provisioner, by reason and catalog app.",
	}, []string{"reason", "app"})
	m.reaps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "reaps_total",
		Help: "Stops the reaper asked for and the provisioner accepted, by reason.",
	}, []string{"reason"})
	m.probeDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "probe_duration_seconds",
		Help:    "Time a /status probe took, failed ones included.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.probeFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "probe_failures_total",
		Help: "/status probes that failed: no answer, a bad status or a bad document.",
	})
	m.proxyRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "proxy_requests_total",
		Help: "Requests the /p/<id>/ proxy answered, by status class (101 for WebSocket upgrades).",
	}, []string{"code"})
	m.proxyBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "proxy_bytes_total",
		Help: "Bytes the proxy carried, WebSocket frames included; direction is in (from browsers) or out (to browsers).",
	}, []string{"direction"})
	m.proxySockets = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "proxy_websockets_open",
		Help: "Upgraded (WebSocket) connections the proxy holds open now.",
	})
	m.eventStreams = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "event_streams_open",
		Help: "Server-sent event streams (/events) open now.",
	})
	m.pool = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "pool_info",
		Help: "Always 1, labelled with the pool this process serves (SPAWNER_POOL; empty is the default pool), to join onto the other series.",
	}, []string{"pool"})
	for _, o := range []string{"ready", "failed"} {
		m.spawnDuration.WithLabelValues(o)
	}
	m.proxyIn, m.proxyOut = m.proxyBytes.WithLabelValues("in"), m.proxyBytes.WithLabelValues("out")
	// Known label values start at zero, so rate() and the dashboards work
	// before the first of each happens.
	for _, r := range []string{FailCapacity, FailTimeout, FailBackend, FailCancelled, FailRegistry} {
		m.spawnFailures.WithLabelValues(r)
	}
	for _, r := range []messages.Reason{messages.ReasonIdle, messages.ReasonLifetime, messages.ReasonUnhealthy} {
		m.reaps.WithLabelValues(string(r))
	}
	for _, c := range []string{"101", "2xx", "3xx", "4xx", "5xx"} {
		m.proxyRequests.WithLabelValues(c)
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.sessions, m.spawnDuration, m.spawnFailures, m.spawnsInFlight, queue,
		m.terminations, m.reaps, m.probeDuration, m.probeFailures,
		m.proxyRequests, m.proxyBytes, m.proxySockets, m.eventStreams, m.pool,
	)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 10 * time.Second})
	return m
}

// Registry returns the registry, for tests and for adding collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Serve answers /metrics on ln until ctx is done. Processes without the
// gateway use it through SPAWNER_METRICS_ADDR.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("metrics listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("metrics serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// SpawnStarted counts a spawn as in flight until SpawnDone.
func (m *Metrics) SpawnStarted() {
	if m != nil {
		m.spawnsInFlight.Inc()
	}
}

// SpawnDone ends what SpawnStarted began.
func (m *Metrics) SpawnDone() {
	if m != nil {
		m.spawnsInFlight.Dec()
	}
}

// SpawnReady records a spawn that produced a ready session.
func (m *Metrics) SpawnReady(took time.Duration) {
	if m != nil {
		m.spawnDuration.WithLabelValues("ready").Observe(took.Seconds())
	}
}

// SpawnFailed records a spawn that failed for reason, one of the Fail
// constants; took is zero when it failed before starting anything.
func (m *Metrics) SpawnFailed(reason string, took time.Duration) {
	if m == nil {
		return
	}
	m.spawnFailures.WithLabelValues(reason).Inc()
	if took > 0 {
		m.spawnDuration.WithLabelValues("failed").Observe(took.Seconds())
	}
}

// TrackSpawnQueue makes depth the source of spawner_spawn_queue_depth.
// It is read at every scrape; nil stops tracking.
func (m *Metrics) TrackSpawnQueue(depth func() int) {
	if m == nil {
		return
	}
	if depth == nil {
		m.spawnQueue.Store(nil)
		return
	}
	m.spawnQueue.Store(&depth)
}

// SessionTerminated records a session of app the provisioner ended.
func (m *Metrics) SessionTerminated(app string, reason messages.Reason) {
	if m != nil {
		m.terminations.WithLabelValues(string(reason), AppLabel(app)).Inc()
	}
}

// terminationReasons are the reasons a session ends, each series started
// at zero for every known app.
var terminationReasons = []messages.Reason{messages.ReasonIdle, messages.ReasonLifetime, messages.ReasonDeleted,
	messages.ReasonExited, messages.ReasonFailed, messages.ReasonOrphaned, messages.ReasonLost,
	messages.ReasonUnhealthy, messages.ReasonShutdown}

// KnowApps starts the per-app series of the catalog's apps at zero, so
// rate() and the dashboards work before the first session of each.
func (m *Metrics) KnowApps(apps []string) {
	if m == nil {
		return
	}
	for _, app := range apps {
		for _, st := range []messages.Status{messages.StatusCreating, messages.StatusReady, messages.StatusStopping} {
			m.sessions.WithLabelValues(string(st), app)
		}
		for _, r := range terminationReasons {
			m.terminations.WithLabelValues(string(r), app)
		}
	}
}

// AppLabel is the app label of a session: a record from before the
// catalog names no app, and ran the one app there was, "default".
func AppLabel(app string) string {
	if app == "" {
		return "default"
	}
	return app
}

// Reaped records a stop the reaper asked for and got.
func (m *Metrics) Reaped(reason messages.Reason) {
	if m != nil {
		m.reaps.WithLabelValues(string(reason)).Inc()
	}
}

// Probed records one /status probe.
func (m *Metrics) Probed(took time.Duration, failed bool) {
	if m == nil {
		return
	}
	m.probeDuration.Observe(took.Seconds())
	if failed {
		m.probeFailures.Inc()
	}
}

// ProxyAnswered records one proxied request by its status code.
func (m *Metrics) ProxyAnswered(status int) {
	if m == nil {
		return
	}
	code := "101"
	if status != http.StatusSwitchingProtocols {
		code = strconv.Itoa(status/100) + "xx"
	}
	m.proxyRequests.WithLabelValues(code).Inc()
}

// ProxyBytesIn adds n bytes that browsers sent through the proxy.
func (m *Metrics) ProxyBytesIn(n int) {
	if m != nil && n > 0 {
		m.proxyIn.Add(float64(n))
	}
}

// ProxyBytesOut adds n bytes that the proxy sent to browsers.
func (m *Metrics) ProxyBytesOut(n int) {
	if m != nil && n > 0 {
		m.proxyOut.Add(float64(n))
	}
}

// WebSocketOpened counts an upgraded connection until WebSocketClosed.
func (m *Metrics) WebSocketOpened() {
	if m != nil {
		m.proxySockets.Inc()
	}
}

// WebSocketClosed ends what WebSocketOpened began.
func (m *Metrics) WebSocketClosed() {
	if m != nil {
		m.proxySockets.Dec()
	}
}

// EventStreamOpened counts an open /events stream until EventStreamClosed.
func (m *Metrics) EventStreamOpened() {
	if m != nil {
		m.eventStreams.Inc()
	}
}

// EventStreamClosed ends what EventStreamOpened began.
func (m *Metrics) EventStreamClosed() {
	if m != nil {
		m.eventStreams.Dec()
	}
}
