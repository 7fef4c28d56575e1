package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

const (
	// simulateAnnotation asks the fakelet to fake a failure for the pod.
	simulateAnnotation = "fakelet.spawner.dev/simulate"
	simImagePull       = "ImagePullBackOff"
	simUnschedulable   = "Unschedulable"
	simCrashLoop       = "CrashLoopBackOff"

	// managedByLabel marks the pods whose app the fakelet really runs.
	managedByLabel = "app.kubernetes.io/managed-by"
	managedBy      = "spawner"

	appContainer     = "app"
	sidecarContainer = "sidecar"
	defaultPort      = 8080
	// sidecarDefaultPort is where the Spawner sidecar listens unless told.
	sidecarDefaultPort = 7070
	workers            = 4
)

// podRun is what the fakelet runs for one pod UID.
type podRun struct {
	uid         types.UID
	ip          netip.Addr
	startTime   metav1.Time
	containers  map[string]*container // by container name, init ones too
	configErr   string                // CreateContainerConfigError message
	cancel      context.CancelFunc    // stops the readiness probes
	terminating bool
	finished    bool // the main containers have exited
}

// podController binds pending pods to the node and reconciles the pods bound
// to it with local processes.
type podController struct {
	client   kubernetes.Interface
	cfg      config
	labels   map[string]string
	factory  informers.SharedInformerFactory
	lister   corelisters.PodLister
	queue    workqueue.TypedRateLimitingInterface[string]
	env      *envResolver
	runGroup wait.Group

	mu   sync.Mutex
	runs map[string]*podRun // by namespace/name
	ips  *ipPool
}

func newPodController(client kubernetes.Interface, cfg config, nodeLabels map[string]string) *podController {
	factory := informers.NewSharedInformerFactory(client, 0)
	c := &podController{
		client:  client,
		cfg:     cfg,
		labels:  nodeLabels,
		factory: factory,
		lister:  factory.Core().V1().Pods().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 5*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "fakelet"}),
		env:  &envResolver{client: client},
		runs: map[string]*podRun{},
		ips:  newIPPool(cfg.podCIDR),
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	_, _ = factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	return c
}

// run syncs pods until ctx ends.
func (c *podController) run(ctx context.Context) error {
	defer c.queue.ShutDown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.factory.Core().V1().Pods().Informer().HasSynced) {
		return fmt.Errorf("pod informer did not sync: %w", ctx.Err())
	}
	// Addresses of pods from an earlier run stay theirs.
	pods, _ := c.lister.List(labels.Everything())
	c.mu.Lock()
	for _, p := range pods {
		if ip, err := netip.ParseAddr(p.Status.PodIP); err == nil && p.Spec.NodeName == c.cfg.nodeName {
			c.ips.claim(ip)
		}
	}
	c.mu.Unlock()
	klog.InfoS("Fakelet ready", "node", c.cfg.nodeName, "podCIDR", c.cfg.podCIDR)
	for range workers {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
	return nil
}

func (c *podController) worker(ctx context.Context) {
	for {
		key, quit := c.queue.Get()
		if quit {
			return
		}
		if err := c.sync(ctx, key); err != nil {
			if ctx.Err() == nil {
				klog.InfoS("Sync failed, retrying", "pod", key, "err", err)
			}
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

func (c *podController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := c.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.stopRun(key, "", 0) // force-deleted: nobody waits for a grace period
		return nil
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	run := c.runs[key]
	c.mu.Unlock()
	if run != nil && (run.uid != pod.UID || (run.configErr != "" && pod.DeletionTimestamp == nil)) {
		// A new pod reused the name, or a pod whose env could not be built
		// gets another try.
		c.stopRun(key, run.uid, 0)
		run = nil
	}

	sim := pod.Annotations[simulateAnnotation]
	switch {
	case pod.Spec.NodeName == "":
		return c.schedule(ctx, pod, sim)
	case pod.Spec.NodeName != c.cfg.nodeName:
		return nil
	case pod.DeletionTimestamp != nil:
		c.terminate(key, pod)
		return nil
	case run == nil && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed):
		return nil // finished before; containers do not restart
	}

	if run == nil {
		if run, err = c.startRun(ctx, key, pod, sim); err != nil {
			return err
		}
	}
	switch {
	case run.configErr != "":
		// Like the kubelet, retry until the missing ConfigMap/Secret appears.
		c.queue.AddAfter(key, 2*time.Second)
	case sim == simImagePull && time.Since(run.startTime.Time) < 2*imagePullDelay:
		c.queue.AddAfter(key, imagePullDelay) // to turn ErrImagePull into BackOff
	}
	status := c.desiredStatus(pod, run, sim)
	c.mu.Lock()
	finish := !run.finished && (status.Phase == corev1.PodSucceeded || status.Phase == corev1.PodFailed)
	run.finished = run.finished || finish
	c.mu.Unlock()
	if finish {
		// The main containers are done: stop the sidecars, as the kubelet does.
		for _, ct := range run.containers {
			c.runGroup.Start(func() { ct.stop(c.cfg.maxGrace) })
		}
	}
	return c.writeStatus(ctx, pod, status)
}

// schedule binds a pending pod to the node, standing in for kube-scheduler,
// or reports it unschedulable.
func (c *podController) schedule(ctx context.Context, pod *corev1.Pod, sim string) error {
	if pod.DeletionTimestamp != nil || (pod.Spec.SchedulerName != "" && pod.Spec.SchedulerName != corev1.DefaultSchedulerName) {
		return nil
	}
	reason := ""
	if sim == simUnschedulable {
		reason = "0/1 nodes are available: 1 node(s) were marked unschedulable by " + simulateAnnotation + "."
	}
	for k, v := range pod.Spec.NodeSelector {
		if c.labels[k] != v {
			reason = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
		}
	}
	if reason != "" {
		return c.writeStatus(ctx, pod, unschedulableStatus(pod, reason))
	}
	err := c.client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: c.cfg.nodeName},
	}, metav1.CreateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // deleted or already bound meanwhile; the next event tells
	}
	return err
}

// startRun allocates the pod's address and starts its containers.
func (c *podController) startRun(ctx context.Context, key string, pod *corev1.Pod, sim string) (*podRun, error) {
	c.mu.Lock()
	ip, err := netip.ParseAddr(pod.Status.PodIP)
	if err == nil {
		c.ips.claim(ip) // keep the address the pod already reports
	} else {
		ip, err = c.ips.allocate()
	}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	run := &podRun{uid: pod.UID, ip: ip, startTime: now(), containers: map[string]*container{}, cancel: cancel}
	if pod.Status.StartTime != nil {
		run.startTime = *pod.Status.StartTime
	}
	c.mu.Lock()
	c.runs[key] = run
	c.mu.Unlock()

	// Simulated failures and pods Spawner does not manage start nothing.
	if sim != "" || pod.Labels[managedByLabel] != managedBy {
		for _, ct := range allContainers(pod) {
			run.containers[ct.Name] = virtualContainer(ct.Name)
		}
		return run, nil
	}

	app := appSpec(pod)
	appPort := firstPort(app)
	if appPort == 0 {
		appPort = defaultPort
	}
	podWithIP := pod.DeepCopy()
	podWithIP.Status.PodIP = ip.String()
	for _, ct := range allContainers(pod) {
		command := ""
		extra := map[string]string{}
		forced := map[string]string{"HOST": ip.String()}
		if p := firstPort(ct); p != 0 {
			extra["PORT"] = strconv.Itoa(p)
		}
		switch {
		case ct == app:
			command = c.cfg.appCommand
			extra["PORT"] = strconv.Itoa(appPort)
		case ct.Name == sidecarContainer && isSidecar(pod, ct.Name):
			command = c.cfg.sidecarCommand
			extra["SPAWNER_APP_PORT"] = strconv.Itoa(appPort)
			// The sidecar listens on all interfaces by default, which would
			// clash between pods; pin it to the pod's address.
			port := firstPort(ct)
			if port == 0 {
				port = sidecarDefaultPort
			}
			forced["SPAWNER_SIDECAR_ADDR"] = net.JoinHostPort(ip.String(), strconv.Itoa(port))
		}
		if command == "" {
			run.containers[ct.Name] = virtualContainer(ct.Name)
			continue
		}
		env, err := c.env.build(ctx, podWithIP, ct, extra, forced)
		if err != nil {
			// Report the error and start nothing; sync retries later.
			cancel()
			for _, started := range run.containers {
				started.stop(0)
			}
			c.mu.Lock()
			run.configErr = err.Error()
			c.mu.Unlock()
			return run, nil
		}
		logPath := ""
		if c.cfg.logDir != "" {
			logPath = filepath.Join(c.cfg.logDir, fmt.Sprintf("%s_%s_%s.log", pod.Namespace, pod.Name, ct.Name))
		}
		proc, err := startProcess(ct.Name, command, env, logPath)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", ct.Name, err)
		}
		klog.InfoS("Started container", "pod", key, "container", ct.Name, "ip", ip, "pid", proc.cmd.Process.Pid)
		c.mu.Lock()
		run.containers[ct.Name] = proc
		c.mu.Unlock()
		c.runGroup.Start(func() {
			proc.wait(func(code int32) {
				c.mu.Lock()
				proc.exited, proc.exitCode, proc.ready, proc.finishedAt = true, code, false, now()
				c.mu.Unlock()
				klog.InfoS("Container exited", "pod", key, "container", ct.Name, "exitCode", code)
				c.queue.Add(key)
			})
		})
		check := readinessCheck(ct, ip)
		if check == nil {
			c.mu.Lock()
			proc.ready = true
			c.mu.Unlock()
			continue
		}
		c.runGroup.Start(func() {
			proc.probeUntilReady(runCtx, check, func() {
				c.mu.Lock()
				proc.ready = !proc.exited
				c.mu.Unlock()
				c.queue.Add(key)
			})
		})
	}
	return run, nil
}

// writeStatus updates the pod status if it differs from the current one.
func (c *podController) writeStatus(ctx context.Context, pod *corev1.Pod, status corev1.PodStatus) error {
	if apiequality.Semantic.DeepEqual(pod.Status, status) {
		return nil
	}
	updated := pod.DeepCopy()
	updated.Status = status
	_, err := c.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // a newer event for the pod is on its way
	}
	if err == nil {
		klog.V(2).InfoS("Pod status written", "pod", klog.KObj(pod), "phase", status.Phase)
	}
	return err
}

func init() {
	// Crashes in handlers should crash the fakelet (and with it its
	// processes) rather than leave a half-working node behind.
	utilruntime.ReallyCrash = true
}
