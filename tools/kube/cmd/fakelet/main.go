// Command fakelet is a simulated kubelet for the local control plane. It
// registers one Node, binds pending pods to it (there is no kube-scheduler),
// and runs each Spawner-managed pod's containers as local processes, each pod
// on its own loopback address, reporting their state back as pod status.
//
// Pods can ask for a failure instead with the annotation
// fakelet.spawner.dev/simulate set to ImagePullBackOff, Unschedulable or
// CrashLoopBackOff. Pods without the Spawner label are marked running without
// starting anything, like a node that only pretends.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// config holds the command-line settings shared by the node and pod loops.
type config struct {
	nodeName       string
	appCommand     string
	sidecarCommand string
	logDir         string
	podCIDR        netip.Prefix
	maxGrace       time.Duration
}

func main() {
	var (
		cfg        config
		kubeconfig string
		spawnerBin string
		cidr       string
	)
	flag.StringVar(&kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster to join")
	flag.StringVar(&cfg.nodeName, "node-name", "fakelet", "name of the Node to register")
	flag.StringVar(&spawnerBin, "spawner-bin", "spawner", "spawner binary used by the default app and sidecar commands")
	flag.StringVar(&cfg.appCommand, "app-command", "", "shell command run for the container named app; $HOST and $PORT are set (default: <spawner-bin> demo)")
	flag.StringVar(&cfg.sidecarCommand, "sidecar-command", "", "shell command run for the native sidecar named sidecar (default: <spawner-bin> sidecar)")
	flag.StringVar(&cfg.logDir, "log-dir", "", "directory for per-container output files (default: the fakelet's stderr)")
	flag.StringVar(&cidr, "pod-cidr", "127.10.0.0/16", "loopback range that pod IPs are allocated from")
	flag.DurationVar(&cfg.maxGrace, "max-grace", 3*time.Second, "upper bound on a pod's termination grace period, so deletes stay prompt")
	klog.InitFlags(nil)
	flag.Parse()

	if cfg.appCommand == "" {
		cfg.appCommand = shellQuote(spawnerBin) + " demo"
	}
	if cfg.sidecarCommand == "" {
		cfg.sidecarCommand = shellQuote(spawnerBin) + " sidecar"
	}
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil || !prefix.Addr().IsLoopback() || !prefix.Addr().Is4() {
		klog.Exitf("--pod-cidr must be an IPv4 loopback range, got %q", cidr)
	}
	cfg.podCIDR = prefix.Masked()

	if err := run(cfg, kubeconfig); err != nil {
		klog.Exit(err)
	}
}

func run(cfg config, kubeconfig string) error {
	rest, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	// A node's worth of status writes arrives in bursts when many pods start
	// at once; the client-side defaults (5 qps) would make tests crawl.
	rest.QPS, rest.Burst = 200, 400
	rest.UserAgent = "fakelet"
	client, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	node := newNode(client, cfg.nodeName)
	if err := node.register(ctx); err != nil {
		return err
	}
	go node.heartbeat(ctx)

	pods := newPodController(client, cfg, node.labels())
	// The deferred shutdown runs on every exit path so that no app process
	// outlives the fakelet, even when the informer fails to start.
	defer pods.shutdown()
	return pods.run(ctx)
}

// shellQuote quotes s for /bin/sh so paths with spaces survive.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
