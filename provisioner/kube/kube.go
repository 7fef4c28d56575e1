// Package kube is the Kubernetes backend: each session is a Pod and a
// ClusterIP Service in one namespace. A single shared informer on the
// managed pods feeds readiness, exits and reconciliation, so a spawn never
// opens a watch of its own.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// Config holds the Kubernetes backend's settings.
type Config struct {
	// Kubeconfig is used outside a pod; empty means $KUBECONFIG or
	// ~/.kube/config. Inside a pod the in-cluster config wins unless set.
	Kubeconfig string `envconfig:"KUBECONFIG" desc:"kubeconfig file outside a pod (default: $KUBECONFIG or ~/.kube/config)"`
	// Namespace holds every session's Pod and Service.
	Namespace string `envconfig:"NAMESPACE" default:"spawner" desc:"the namespace of every session's Pod and Service"`
	// Image runs in the container named app, overriding the pod
	// template's. It has no default here: a cluster pulls images by
	// name, and a wrong guess would only show as ImagePullBackOff.
	Image string `envconfig:"APPLICATION_IMAGE" desc:"the session app's image (docker: must be on the engine, never pulled; kubernetes: overrides the pod template's)"`
	// Port is the app's containerPort, handed to it as $PORT.
	Port int `envconfig:"APPLICATION_PORT" default:"8080" desc:"the port the app listens on inside its container, given to it as PORT"`
	// PodTemplate is a YAML file (a Pod or a PodTemplate) supplying
	// everything Spawner does not set itself.
	PodTemplate   string `envconfig:"POD_TEMPLATE" desc:"a YAML Pod or PodTemplate file for everything Spawner does not set itself"`
	ClusterDomain string `envconfig:"CLUSTER_DOMAIN" default:"cluster.local" desc:"the cluster's DNS domain, for session Service names"`
	// Route is "service" (the Service's DNS name, the default) or
	// "pod-ip" (the pod's IP, for proxies outside the cluster DNS).
	Route string `envconfig:"KUBE_ROUTE" default:"service" desc:"how the proxy reaches a pod: service (cluster DNS) or pod-ip"`
	// StatusSource is "app" (the app serves /status) or "sidecar" (a
	// native sidecar serves it from the pod's TCP table).
	StatusSource string `envconfig:"STATUS_SOURCE" default:"app" desc:"where activity comes from: app (its own /status) or sidecar"`
	// SidecarImage is Spawner's own image, run as "spawner sidecar".
	SidecarImage string `envconfig:"SIDECAR_IMAGE" default:"spawner:latest" desc:"the image that runs spawner sidecar beside each app"`
	SidecarPort  int    `envconfig:"SIDECAR_PORT" default:"7070" desc:"the port the kubernetes sidecar serves /status on"`
	// RunAsNonRoot runs pods as RunAsUser unless the template says
	// otherwise; turn it off for images that need root.
	RunAsNonRoot bool   `envconfig:"KUBE_RUN_AS_NON_ROOT" default:"true" desc:"run session pods as a non-root user unless the template says otherwise"`
	RunAsUser    int64  `envconfig:"KUBE_RUN_AS_USER" default:"65532" desc:"the user id session pods run as"`
	CPURequest   string `envconfig:"KUBE_CPU_REQUEST" default:"100m" desc:"CPU request of each session pod"`
	MemRequest   string `envconfig:"KUBE_MEMORY_REQUEST" default:"128Mi" desc:"memory request of each session pod"`
	CPULimit     string `envconfig:"KUBE_CPU_LIMIT" default:"1" desc:"CPU limit of each session pod"`
	MemLimit     string `envconfig:"KUBE_MEMORY_LIMIT" default:"512Mi" desc:"memory limit of each session pod"`
	// StopGrace becomes the pod's termination grace period unless the
	// template sets one.
	StopGrace time.Duration `envconfig:"STOP_GRACE" default:"3s" desc:"SIGTERM to SIGKILL for a session's process group"`
	// APITimeout bounds each API call with its retries, so an unreachable
	// API server fails a spawn promptly instead of at the spawn timeout.
	APITimeout time.Duration `envconfig:"KUBE_API_TIMEOUT" default:"5s" desc:"time limit of each Kubernetes API call, retries included"`
	// QPS and Burst limit this client's request rate; client-go's own
	// defaults (5 and 10) would serialise a burst of spawns.
	QPS   float32 `envconfig:"KUBE_QPS" default:"100" desc:"Kubernetes API requests per second"`
	Burst int     `envconfig:"KUBE_BURST" default:"200" desc:"Kubernetes API request burst"`
}

// The routes a Config may choose.
const (
	RouteService = "service"
	RoutePodIP   = "pod-ip"
)

// Backend runs sessions as pods.
type Backend struct {
	cfg      Config
	sources  messages.StatusSources
	client   Client
	log      *slog.Logger
	template *corev1.Pod
	defaults defaults
	status   provisioner.StatusChecker

	informer cache.SharedIndexInformer
	lister   corelisters.PodLister
	synced   chan struct{}

	mu sync.Mutex
	// waiters wakes the Start waiting on a session when its pod changes.
	waiters map[string]chan struct{}
	// absent holds sessions whose pod create was refused outright, so
	// the rollback's Stop needs no API server.
	absent map[string]bool
	// reported holds the pods already reported as ended, by UID.
	reported map[string]bool
	exits    chan<- provisioner.Exit
	done     <-chan struct{}
}

// New connects to the cluster from cfg and returns the backend; Run must
// be running for Start and List to answer.
func New(cfg Config, log *slog.Logger) (*Backend, error) {
	rc, err := restConfig(cfg)
	if err != nil {
		return nil, err
	}
	return NewWithConfig(cfg, rc, log)
}

// NewWithConfig returns the backend on the API server rc names, ignoring
// cfg's kubeconfig and rate limits, as tests do with other credentials.
func NewWithConfig(cfg Config, rc *rest.Config, log *slog.Logger) (*Backend, error) {
	client, err := NewClient(rc)
	if err != nil {
		return nil, err
	}
	return NewWithClient(cfg, client, log)
}

// NewWithClient returns the backend using client, as tests do with a
// fake clientset.
func NewWithClient(cfg Config, client Client, log *slog.Logger) (*Backend, error) {
	cfg, d, err := checkConfig(cfg)
	if err != nil {
		return nil, err
	}
	var tmpl *corev1.Pod
	if cfg.PodTemplate != "" {
		if tmpl, err = LoadTemplate(cfg.PodTemplate); err != nil {
			return nil, err
		}
	}
	if cfg.Image == "" && templateImage(tmpl) == "" {
		return nil, errors.New("kubernetes backend: set SPAWNER_APPLICATION_IMAGE or give the app container an image in the pod template")
	}
	sources, _ := messages.ParseStatusSources(cfg.StatusSource) // checkConfig checked it
	b := &Backend{
		cfg: cfg, sources: sources, client: client, log: log.With("component", "kube-backend"), template: tmpl, defaults: d,
		status: provisioner.NewStatusChecker(), synced: make(chan struct{}),
		waiters: map[string]chan struct{}{},
		absent:  map[string]bool{}, reported: map[string]bool{},
	}
	b.informer = podInformer(client, cfg.Namespace)
	b.lister = corelisters.NewPodLister(b.informer.GetIndexer())
	if err := b.informer.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		b.log.Warn("pod watch failed; retrying", "namespace", cfg.Namespace, "err", err)
	}); err != nil {
		return nil, err
	}
	if _, err := b.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { b.onPod(obj, false) },
		UpdateFunc: func(_, obj any) { b.onPod(obj, false) },
		DeleteFunc: func(obj any) { b.onPod(obj, true) },
	}); err != nil {
		return nil, err
	}
	return b, nil
}

// podInformer lists and watches the managed pods of namespace, as
// client-go's informer factory would, without the factory, which links
// every API group's informer into the binary.
func podInformer(client Client, namespace string) cache.SharedIndexInformer {
	pods := client.Pods(namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = managedSelector
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = managedSelector
			return pods.Watch(ctx, o)
		},
	}
	// A client that cannot stream the initial list in its watch (a fake
	// clientset) says so, and the reflector then lists first.
	return cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, client), &corev1.Pod{}, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// defaults are the parsed resource settings.
type defaults struct {
	requests, limits corev1.ResourceList
}

func checkConfig(cfg Config) (Config, defaults, error) {
	var d defaults
	if errs := validation.IsDNS1123Label(cfg.Namespace); len(errs) > 0 {
		return cfg, d, fmt.Errorf("kubernetes backend: namespace %q: %v", cfg.Namespace, errs)
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return cfg, d, fmt.Errorf("kubernetes backend: application port %d: want 1-65535", cfg.Port)
	}
	// The defaults live in the tags (settings.Defaults gives them to code
	// that builds a Config by hand); an empty one here is a mistake.
	if cfg.ClusterDomain == "" {
		return cfg, d, errors.New("kubernetes backend: SPAWNER_CLUSTER_DOMAIN is empty")
	}
	switch cfg.Route {
	case RouteService, RoutePodIP:
	default:
		return cfg, d, fmt.Errorf("kubernetes backend: route %q: want %s or %s", cfg.Route, RouteService, RoutePodIP)
	}
	sources, err := messages.ParseStatusSources(cfg.StatusSource)
	if err != nil {
		return cfg, d, fmt.Errorf("kubernetes backend: %w", err)
	}
	if sources.Sidecar {
		if cfg.SidecarImage == "" {
			return cfg, d, errors.New("kubernetes backend: the sidecar status source needs SPAWNER_SIDECAR_IMAGE")
		}
		if cfg.SidecarPort < 1 || cfg.SidecarPort > 65535 || cfg.SidecarPort == cfg.Port {
			return cfg, d, fmt.Errorf("kubernetes backend: sidecar port %d: want 1-65535, not the app port", cfg.SidecarPort)
		}
	}
	if cfg.RunAsUser < 0 {
		return cfg, d, fmt.Errorf("kubernetes backend: run-as user %d is negative", cfg.RunAsUser)
	}
	d.requests, d.limits = corev1.ResourceList{}, corev1.ResourceList{}
	for _, q := range []struct {
		list  corev1.ResourceList
		name  corev1.ResourceName
		value string
	}{
		{d.requests, corev1.ResourceCPU, cfg.CPURequest}, {d.requests, corev1.ResourceMemory, cfg.MemRequest},
		{d.limits, corev1.ResourceCPU, cfg.CPULimit}, {d.limits, corev1.ResourceMemory, cfg.MemLimit},
	} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			return cfg, d, fmt.Errorf("kubernetes backend: %s quantity %q: %w", q.name, q.value, err)
		}
		q.list[q.name] = v
	}
	if cfg.StopGrace < 0 {
		cfg.StopGrace = 0
	}
	if cfg.APITimeout <= 0 {
		return cfg, d, fmt.Errorf("kubernetes backend: SPAWNER_KUBE_API_TIMEOUT must be positive, got %s", cfg.APITimeout)
	}
	return cfg, d, nil
}

// Traits says pods outlive the provisioner, and any provisioner on the
// same cluster sees and stops them.
func (b *Backend) Traits() provisioner.Traits { return provisioner.Traits{} }

// Run runs the pod informer until ctx is done, reporting managed pods that
// end on their own. Pods outlive it: a restarted provisioner adopts them.
func (b *Backend) Run(ctx context.Context, exits chan<- provisioner.Exit) error {
	b.mu.Lock()
	b.exits, b.done = exits, ctx.Done()
	b.mu.Unlock()
	var informer sync.WaitGroup
	informer.Go(func() { b.informer.RunWithContext(ctx) })
	if cache.WaitForCacheSync(ctx.Done(), b.informer.HasSynced) {
		close(b.synced)
		b.log.Info("pod cache synced", "namespace", b.cfg.Namespace)
	}
	<-ctx.Done()
	informer.Wait()
	b.mu.Lock()
	b.exits = nil
	b.mu.Unlock()
	return nil
}

// waitSynced waits until the informer has listed the pods once.
func (b *Backend) waitSynced(ctx context.Context) error {
	select {
	case <-b.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the pod cache of namespace %s has not synced: %w", b.cfg.Namespace, ctx.Err())
	}
}

// Start creates the session's Pod and Service and returns once the pod is
// Ready and its /status says listening. On failure it deletes both.
func (b *Backend) Start(ctx context.Context, spec provisioner.Spec) (provisioner.Instance, error) {
	if !messages.ValidSessionID(spec.SessionID) {
		return provisioner.Instance{}, fmt.Errorf("session id %q is not valid", spec.SessionID)
	}
	id := spec.SessionID
	notify := b.watch(id)
	defer b.unwatch(id)
	pod, err := b.podFor(spec)
	if err != nil {
		return provisioner.Instance{}, err
	}
	created, err := b.createPod(ctx, pod)
	if err != nil {
		return provisioner.Instance{}, err
	}
	// The Service needs the pod's UID for its owner reference, and is
	// created while the pod starts so it adds no latency.
	svcErr := make(chan error, 1)
	go func() { svcErr <- b.createService(ctx, b.serviceFor(created)) }()
	inst, err := b.awaitReady(ctx, created, notify)
	if sErr := <-svcErr; err == nil && sErr != nil {
		err = sErr
	}
	if err != nil {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if sErr := b.Stop(cleanup, id); sErr != nil {
			b.log.Error("clean up failed spawn", "session_id", id, "err", sErr)
		}
		return provisioner.Instance{}, err
	}
	return inst, nil
}

// Stop deletes the session's Pod and Service. Missing objects are success.
func (b *Backend) Stop(ctx context.Context, id string) error {
	if !messages.ValidSessionID(id) {
		return nil // No object can carry an invalid id's name.
	}
	b.mu.Lock()
	if b.absent[id] {
		delete(b.absent, id)
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	name := ObjectName(id)
	podErr := b.call(ctx, "delete pod "+name, func(ctx context.Context) error {
		return ignoreNotFound(b.client.Pods(b.cfg.Namespace).Delete(ctx, name, deleteBackground()))
	})
	svcErr := b.call(ctx, "delete service "+name, func(ctx context.Context) error {
		return ignoreNotFound(b.client.Services(b.cfg.Namespace).Delete(ctx, name, deleteBackground()))
	})
	return errors.Join(podErr, svcErr)
}

// List returns the managed pods from the informer's cache, leaving out
// those already being deleted.
func (b *Backend) List(ctx context.Context) ([]provisioner.Instance, error) {
	// At start the first list is usually milliseconds away; during an
	// outage, say so within APITimeout rather than hold up reconciliation.
	select {
	case <-b.synced:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(b.cfg.APITimeout):
		return nil, messages.Errorf(messages.CodeUnavailable, "the pod cache of namespace %s has not synced yet", b.cfg.Namespace)
	}
	pods, err := b.lister.Pods(b.cfg.Namespace).List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	out := make([]provisioner.Instance, 0, len(pods))
	for _, pod := range pods {
		// The selector already filters on the labels; checking again keeps
		// an unfiltered cache from ever listing a stranger's pod.
		if pod.DeletionTimestamp != nil || pod.Labels[LabelManagedBy] != ManagedBy || !messages.ValidSessionID(pod.Labels[LabelSessionID]) {
			continue
		}
		out = append(out, b.instance(pod))
	}
	return out, nil
}

// instance describes pod as the proxy and the prober reach it.
func (b *Backend) instance(pod *corev1.Pod) provisioner.Instance {
	id := pod.Labels[LabelSessionID]
	host := pod.Status.PodIP
	if b.cfg.Route == RouteService {
		host = fmt.Sprintf("%s.%s.svc.%s", ObjectName(id), pod.Namespace, b.cfg.ClusterDomain)
	}
	port := containerPort(pod, appContainer, portName, b.cfg.Port)
	upstream := net.JoinHostPort(host, strconv.Itoa(port))
	statusURL := "http://" + upstream + "/status"
	switch {
	case hasSidecar(pod):
		statusURL = "http://" + net.JoinHostPort(host, strconv.Itoa(containerPort(pod, sidecarContainer, statusPortName, b.cfg.SidecarPort))) + "/status"
	case !b.sourcesOf(pod).Polled():
		statusURL = "" // The gateway alone counts the session's activity.
	}
	return provisioner.Instance{SessionID: id, Upstream: upstream, StatusURL: statusURL,
		Handle: "pod/" + pod.Namespace + "/" + pod.Name, ProxyActivity: b.sourcesOf(pod).Proxy}
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
