package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner/kube"
)

// kubeTemplate exercises the pod template: scheduling, volumes and
// resources that Spawner does not set itself.
const kubeTemplate = `
apiVersion: v1
kind: Pod
metadata:
  labels:
    example.com/origin: template
spec:
  tolerations:
  - key: example.com/dedicated
    operator: Exists
    effect: NoSchedule
  volumes:
  - name: scratch
    emptyDir: {}
  containers:
  - name: app
    volumeMounts:
    - name: scratch
      mountPath: /scratch
    resources:
      requests:
        cpu: 250m
`

func TestKubeSpawnProxyAndStop(t *testing.T) {
	kc := kubeconfigPath(t)
	client := kubeClient(t, kc)
	ns := kubeNamespace(t, client)
	// Session pods meet the restricted Pod Security level by default, so
	// admission in a namespace that enforces it lets them in.
	enforce := []byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"restricted"}}}`)
	if _, err := client.CoreV1().Namespaces().Patch(context.Background(), ns, types.MergePatchType, enforce, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	h := start(t, kubeTestConfig(t, kc, ns, kubeTemplate))
	ev := h.watchEvents(t)

	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{"labels":{"team":"blue"},"env":{"GREETING":"hello"}}`, &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	if code, page := get(t, rep.URL); code != http.StatusOK || !strings.Contains(page, "<html") {
		t.Fatalf("GET %s through the proxy: %d %.200q", rep.URL, code, page)
	}
	code, body := get(t, rep.URL+"status")
	var st messages.AppStatus
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || !st.Listening {
		t.Fatalf("GET status through the proxy: %d %q", code, body)
	}

	pod, svc := sessionObjects(t, client, ns, rep.SessionID)
	if pod == nil || svc == nil {
		t.Fatalf("after ready: pod %v, service %v", pod != nil, svc != nil)
	}
	if pod.Name != "s-"+rep.SessionID || svc.Name != pod.Name {
		t.Errorf("names %s and %s, want s-%s", pod.Name, svc.Name, rep.SessionID)
	}
	for k, v := range map[string]string{kube.LabelManagedBy: "spawner", kube.LabelSessionID: rep.SessionID, "team": "blue", "example.com/origin": "template"} {
		if pod.Labels[k] != v {
			t.Errorf("pod label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	if refs := svc.OwnerReferences; len(refs) != 1 || refs[0].Kind != "Pod" || refs[0].UID != pod.UID {
		t.Errorf("service owner references %+v, want pod %s", refs, pod.UID)
	}
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.ClusterIP == "" || svc.Spec.Selector[kube.LabelSessionID] != rep.SessionID {
		t.Errorf("service %+v", svc.Spec)
	}
	ps := pod.Spec
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token")
	}
	for _, v := range ps.Volumes {
		if v.Projected != nil {
			t.Errorf("volume %s projects a token", v.Name)
		}
	}
	if ps.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %s", ps.RestartPolicy)
	}
	if len(ps.Tolerations) == 0 || !slices.ContainsFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == "scratch" }) {
		t.Errorf("the template's tolerations or volumes were not applied: %+v", ps)
	}
	if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v", ps.SecurityContext)
	}
	app := ps.Containers[0]
	if app.Name != "app" || app.Image != "spawner:latest" {
		t.Errorf("container %s image %s", app.Name, app.Image)
	}
	if sc := app.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container securityContext %+v", app.SecurityContext)
	}
	res := app.Resources
	if q := res.Requests[corev1.ResourceCPU]; q.Cmp(resource.MustParse("250m")) != 0 {
		t.Errorf("cpu request %s, want the template's 250m", q.String())
	}
	if q := res.Limits[corev1.ResourceMemory]; q.Cmp(resource.MustParse("512Mi")) != 0 {
		t.Errorf("memory limit %s, want the default 512Mi", q.String())
	}
	env := map[string]string{}
	for _, e := range app.Env {
		env[e.Name] = e.Value
	}
	for k, v := range map[string]string{"PORT": "8080", "SPAWNER_SESSION_ID": rep.SessionID, "SPAWNER_SESSION_URL": rep.URL, "GREETING": "hello"} {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	code, body = get(t, h.BaseURL+"/sessions/"+rep.SessionID)
	var view struct {
		Upstream  string `json:"upstream"`
		StatusURL string `json:"status_url"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &view) != nil || view.Upstream != pod.Status.PodIP+":8080" {
		t.Errorf("GET /sessions: %d %s, want upstream %s:8080", code, body, pod.Status.PodIP)
	}

	// The same over NATS request-reply, as a back end without HTTP would.
	msg, err := h.NC.Request(h.Subj.Requested(), []byte(`{"request_id":"over-nats"}`), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var natsRep messages.SpawnReply
	if err := json.Unmarshal(msg.Data, &natsRep); err != nil || natsRep.Error != nil || natsRep.Status != messages.StatusReady {
		t.Fatalf("NATS spawn reply %s", msg.Data)
	}
	if pod, _ := sessionObjects(t, client, ns, natsRep.SessionID); pod == nil {
		t.Error("the session spawned over NATS has no pod")
	}

	for _, id := range []string{rep.SessionID, natsRep.SessionID} {
		req, _ := http.NewRequest(http.MethodDelete, h.BaseURL+"/sessions/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE %s: %d", id, resp.StatusCode)
		}
		if e := awaitEvent(t, ev, id, messages.EventTerminated, 10*time.Second); e.Reason != messages.ReasonDeleted {
			t.Errorf("terminated %+v, want reason deleted", e)
		}
		awaitGone(t, client, ns, id)
	}
	// Nothing the deletes did may read as an instance ending by itself.
	time.Sleep(time.Second)
	for _, id := range []string{rep.SessionID, natsRep.SessionID} {
		if got := ev.find(id, messages.EventTerminated); len(got) != 1 {
			t.Errorf("%d terminated events for %s, want 1: %+v", len(got), id, got)
		}
	}
}

func TestKubeIdleReapRemovesPodAndService(t *testing.T) {
	kc := kubeconfigPath(t)
	client := kubeClient(t, kc)
	ns := kubeNamespace(t, client)
	cfg := kubeTestConfig(t, kc, ns, "")
	cfg.Provisioner.IdleTimeout = 3 * time.Second
	cfg.Prober.ProbeInterval = time.Second
	h := start(t, cfg)
	ev := h.watchEvents(t)

	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{}`, &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	if pod, svc := sessionObjects(t, client, ns, rep.SessionID); pod == nil || svc == nil {
		t.Fatal("no pod or service after ready")
	}
	if e := awaitEvent(t, ev, rep.SessionID, messages.EventTerminated, 30*time.Second); e.Reason != messages.ReasonIdle {
		t.Fatalf("terminated %+v, want reason idle", e)
	}
	awaitGone(t, client, ns, rep.SessionID)
}

func TestKubeSpawnFailures(t *testing.T) {
	kc := kubeconfigPath(t)
	client := kubeClient(t, kc)
	simulate := func(what string) string {
		return "metadata:\n  annotations:\n    fakelet.spawner.dev/simulate: " + what + "\n"
	}
	cases := []struct {
		name, template string
		timeout        time.Duration
		status         int
		code           messages.ErrorCode
		says           string
	}{
		{"image pull", simulate("ImagePullBackOff"), 20 * time.Second, http.StatusBadGateway, messages.CodeSpawnFailed, "ImagePull"},
		{"unschedulable", simulate("Unschedulable"), 20 * time.Second, http.StatusBadGateway, messages.CodeSpawnFailed, "Unschedulable"},
		{"crash loop", simulate("CrashLoopBackOff"), 20 * time.Second, http.StatusBadGateway, messages.CodeSpawnFailed, "CrashLoopBackOff"},
		// A readiness gate nothing sets keeps the pod from ever being Ready.
		{"timeout", "spec:\n  readinessGates:\n  - conditionType: example.com/never\n", 5 * time.Second,
			http.StatusGatewayTimeout, messages.CodeTimeout, "not ready within the spawn timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns := kubeNamespace(t, client)
			cfg := kubeTestConfig(t, kc, ns, c.template)
			cfg.Provisioner.SpawnTimeout, cfg.Gateway.SpawnTimeout = c.timeout, c.timeout
			h := start(t, cfg)
			ev := h.watchEvents(t)
			status, e := spawnError(t, h, `{}`)
			if status != c.status || e.Code != c.code || !strings.Contains(e.Message, c.says) {
				t.Fatalf("POST /init: %d %+v, want %d %s saying %q", status, e, c.status, c.code, c.says)
			}
			id := sessionIn(e.Message)
			if id == "" {
				t.Fatalf("the error %q names no session", e.Message)
			}
			if f := awaitEvent(t, ev, id, messages.EventFailed, 10*time.Second); !strings.Contains(f.Error, c.says) {
				t.Errorf("failed event %+v does not say %q", f, c.says)
			}
			awaitGone(t, client, ns, id)
		})
	}
}

func TestKubeReconcileOrphansAndEndings(t *testing.T) {
	kc := kubeconfigPath(t)
	client := kubeClient(t, kc)
	ns := kubeNamespace(t, client)
	cfg := kubeTestConfig(t, kc, ns, "")
	cfg.Provisioner.Reconcile = time.Second
	h := start(t, cfg)
	ev := h.watchEvents(t)
	ctx := context.Background()

	// A pod that carries Spawner's labels but has no session record, as
	// one left by a provisioner that crashed mid-spawn.
	orphan := messages.NewSessionID()
	_, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: kube.ObjectName(orphan), Labels: map[string]string{kube.LabelManagedBy: "spawner", kube.LabelSessionID: orphan}},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{Name: "app", Image: "spawner:latest", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e := awaitEvent(t, ev, orphan, messages.EventTerminated, 20*time.Second); e.Reason != messages.ReasonOrphaned {
		t.Errorf("terminated %+v, want reason orphaned", e)
	}
	awaitGone(t, client, ns, orphan)

	// A session whose pod someone else deletes ends as lost.
	var lost messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{}`, &lost); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, lost)
	}
	if err := client.CoreV1().Pods(ns).Delete(ctx, kube.ObjectName(lost.SessionID), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if e := awaitEvent(t, ev, lost.SessionID, messages.EventTerminated, 20*time.Second); e.Reason != messages.ReasonLost {
		t.Errorf("terminated %+v, want reason lost", e)
	}
	awaitGone(t, client, ns, lost.SessionID)

	// A session whose app exits ends as exited, and its pod goes.
	var exited messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{}`, &exited); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, exited)
	}
	procs := appProcesses(t, exited.SessionID)
	if len(procs) == 0 {
		t.Fatal("found no process for the session's app")
	}
	for _, p := range procs {
		pid, _, _ := strings.Cut(p, ":")
		if n, err := strconv.Atoi(pid); err == nil {
			_ = syscall.Kill(n, syscall.SIGKILL)
		}
	}
	if e := awaitEvent(t, ev, exited.SessionID, messages.EventTerminated, 20*time.Second); e.Reason != messages.ReasonExited {
		t.Errorf("terminated %+v, want reason exited", e)
	}
	awaitGone(t, client, ns, exited.SessionID)
}

func TestKubeAPIServerOutage(t *testing.T) {
	kc := kubeconfigPath(t)
	client := kubeClient(t, kc)
	ns := kubeNamespace(t, client)
	proxied, proxy := proxiedKubeconfig(t, kc)
	cfg := kubeTestConfig(t, proxied, ns, "")
	cfg.Kube.APITimeout = 2 * time.Second
	h := start(t, cfg)
	ev := h.watchEvents(t)

	var before messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{}`, &before); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, before)
	}

	proxy.Stop()
	began := time.Now()
	status, e := spawnError(t, h, `{}`)
	t.Logf("/init answered %d in %s with the API server gone", status, time.Since(began))
	if status != http.StatusServiceUnavailable || e.Code != messages.CodeUnavailable || !strings.Contains(e.Message, "API server") {
		t.Fatalf("POST /init with the API server gone: %d %+v, want 503 unavailable", status, e)
	}
	if id := sessionIn(e.Message); id != "" {
		awaitEvent(t, ev, id, messages.EventFailed, 10*time.Second)
	}
	// Sessions already running keep serving: the proxy needs no API.
	if code, _ := get(t, before.URL+"status"); code != http.StatusOK {
		t.Errorf("a running session answered %d during the outage", code)
	}

	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	var after messages.SpawnReply
	eventually(t, 60*time.Second, "a spawn to succeed once the API server is back", func() bool {
		resp, err := http.Post(h.BaseURL+"/init", "application/json", strings.NewReader(`{}`))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return false
		}
		return json.NewDecoder(resp.Body).Decode(&after) == nil
	})
	if code, _ := get(t, after.URL+"status"); code != http.StatusOK {
		t.Errorf("the session spawned after recovery answered %d", code)
	}
}

func TestKubeSidecarStatus(t *testing.T) {
	kc := kubeconfigPath(t)
	client := kubeClient(t, kc)
	ns := kubeNamespace(t, client)
	cfg := kubeTestConfig(t, kc, ns, "")
	cfg.Kube.StatusSource, cfg.Kube.SidecarImage = "sidecar", "spawner:latest"
	h := start(t, cfg)

	var rep messages.SpawnReply
	if code := post(t, h.BaseURL+"/init", `{}`, &rep); code != http.StatusCreated {
		t.Fatalf("POST /init: %d %+v", code, rep)
	}
	pod, svc := sessionObjects(t, client, ns, rep.SessionID)
	if pod == nil || svc == nil {
		t.Fatal("no pod or service after ready")
	}
	init := pod.Spec.InitContainers
	if len(init) != 1 || init[0].Name != "sidecar" || init[0].RestartPolicy == nil || *init[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("init containers %+v, want one native sidecar", init)
	}
	if sc := init[0].SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("sidecar securityContext %+v", sc)
	}
	code, body := get(t, h.BaseURL+"/sessions/"+rep.SessionID)
	var view struct {
		StatusURL string `json:"status_url"`
	}
	want := "http://" + pod.Status.PodIP + ":7070/status"
	if code != http.StatusOK || json.Unmarshal([]byte(body), &view) != nil || view.StatusURL != want {
		t.Fatalf("GET /sessions: %d %s, want status_url %s", code, body, want)
	}
	code, body = get(t, view.StatusURL)
	var st messages.AppStatus
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || !st.Listening {
		t.Fatalf("the sidecar's /status: %d %q", code, body)
	}
	if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[1].Port != 7070 {
		t.Errorf("service ports %+v, want the sidecar's too", svc.Spec.Ports)
	}
}
