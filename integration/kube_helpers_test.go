package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spawnerhq/spawner/internal/app"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner/kube"
)

// kubeconfigPath is the local control plane's kubeconfig, or a skip: the
// Makefile points SPAWNER_TEST_KUBECONFIG at the one hack/kube-up.sh writes.
func kubeconfigPath(t testing.TB) string {
	t.Helper()
	path := os.Getenv("SPAWNER_TEST_KUBECONFIG")
	if path == "" {
		t.Skip("SPAWNER_TEST_KUBECONFIG is not set; run hack/kube-up.sh and point it at the kubeconfig it prints")
	}
	if _, err := os.Stat(path); err != nil {
		t.Skipf("SPAWNER_TEST_KUBECONFIG=%s does not exist; run hack/kube-up.sh first", path)
	}
	return path
}

func kubeClient(t testing.TB, kubeconfig string) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 100, 200
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// kubeNamespace creates a namespace of the test's own, deleted at the end
// with whatever is left in it.
func kubeNamespace(t testing.TB, client kubernetes.Interface) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	ns := "spawner-it-" + hex.EncodeToString(b[:])
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}); err != nil {
			t.Logf("delete namespace %s: %v", ns, err)
		}
	})
	// The ServiceAccount admission rejects pods until the namespace's
	// default ServiceAccount exists.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return ns
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s has no default ServiceAccount: %v", ns, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kubeTestConfig is testConfig on the Kubernetes backend in namespace ns,
// routing to pod IPs because the fakelet's pods are local processes.
func kubeTestConfig(t *testing.T, kubeconfig, ns, template string) app.Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.Provisioner.Backend = "kubernetes"
	cfg.Kube.Kubeconfig = kubeconfig
	cfg.Kube.Namespace = ns
	cfg.Kube.Image = "spawner:latest"
	cfg.Kube.Route = kube.RoutePodIP
	if template != "" {
		path := filepath.Join(t.TempDir(), "session-pod.yaml")
		if err := os.WriteFile(path, []byte(template), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Kube.PodTemplate = path
	}
	return cfg
}

// sessionObjects returns the session's Pod and Service, nil where absent.
func sessionObjects(t *testing.T, client kubernetes.Interface, ns, id string) (*corev1.Pod, *corev1.Service) {
	t.Helper()
	ctx := context.Background()
	pod, err := client.CoreV1().Pods(ns).Get(ctx, kube.ObjectName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		pod = nil
	} else if err != nil {
		t.Fatal(err)
	}
	svc, err := client.CoreV1().Services(ns).Get(ctx, kube.ObjectName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		svc = nil
	} else if err != nil {
		t.Fatal(err)
	}
	return pod, svc
}

// awaitGone waits until the session's Pod and Service no longer exist.
func awaitGone(t *testing.T, client kubernetes.Interface, ns, id string) {
	t.Helper()
	eventually(t, 30*time.Second, "the pod and service of "+id+" to be deleted", func() bool {
		pod, svc := sessionObjects(t, client, ns, id)
		return pod == nil && svc == nil
	})
}

// awaitEvent waits for an event of type typ for id and returns it.
func awaitEvent(t *testing.T, ev *events, id string, typ messages.EventType, timeout time.Duration) messages.Event {
	t.Helper()
	var got []messages.Event
	eventually(t, timeout, string(typ)+" event of "+id, func() bool {
		got = ev.find(id, typ)
		return len(got) > 0
	})
	return got[0]
}

// spawnError posts /init expecting failure and returns the status and error.
func spawnError(t *testing.T, h *harness, body string) (int, messages.Error) {
	t.Helper()
	resp, err := http.Post(h.BaseURL+"/init", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out struct {
		Error messages.Error `json:"error"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.Error.Code == "" {
		t.Fatalf("POST /init: %d %q is not an error body", resp.StatusCode, data)
	}
	return resp.StatusCode, out.Error
}

// sessionIn finds the session id in an error message, which names it.
func sessionIn(msg string) string {
	for _, word := range strings.FieldsFunc(msg, func(r rune) bool { return !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz234567", r) }) {
		if messages.ValidSessionID(word) {
			return word
		}
	}
	return ""
}

// kubectlPath is the kubectl built by tools/kube/build.sh, else PATH's.
func kubectlPath(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs("../.cache/kube/bin/kubectl"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl in .cache/kube/bin or on PATH")
	}
	return p
}

// apiProxy forwards TCP to the API server and can be cut and restored,
// so Spawner sees the API server vanish and return while the real one,
// which other tests share, keeps running.
type apiProxy struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newAPIProxy(t *testing.T, target string) *apiProxy {
	t.Helper()
	p := &apiProxy{target: target, addr: "127.0.0.1:0", conns: map[net.Conn]bool{}}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// Start listens again on the same address.
func (p *apiProxy) Start() error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
	return nil
}

func (p *apiProxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// Stop closes the listener and every connection: the API server is gone.
func (p *apiProxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// proxiedKubeconfig writes a copy of kubeconfig whose server is the proxy.
// The API server's certificate names 127.0.0.1, whatever the port.
func proxiedKubeconfig(t *testing.T, kubeconfig string) (path string, proxy *apiProxy) {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	var server string
	for _, c := range cfg.Clusters {
		server = c.Server
	}
	host, ok := strings.CutPrefix(server, "https://")
	if !ok {
		t.Fatalf("kubeconfig server %q is not https://host:port", server)
	}
	proxy = newAPIProxy(t, strings.TrimSuffix(host, "/"))
	for _, c := range cfg.Clusters {
		c.Server = "https://" + proxy.addr
	}
	path = filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path, proxy
}
