package integration

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/spawnerhq/spawner/internal/settings"
	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
	"github.com/spawnerhq/spawner/provisioner/kube"
)

// BenchmarkKubeSpawn measures one spawn, from create to an app that
// answers /status, on the local control plane: through the backend (one
// shared informer), and with plain client-go opening a watch per pod, as
// a straightforward implementation would. Deletes are not timed.
func BenchmarkKubeSpawn(b *testing.B) {
	kc := kubeconfigPath(b)
	client := kubeClient(b, kc)
	ns := kubeNamespace(b, client)

	b.Run("backend", func(b *testing.B) {
		be := benchBackend(b, kc, ns)
		ctx := context.Background()
		for range b.N {
			id := messages.NewSessionID()
			startCtx, done := context.WithTimeout(ctx, 30*time.Second)
			_, err := be.Start(startCtx, provisioner.Spec{SessionID: id})
			done()
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = be.Stop(ctx, id)
			b.StartTimer()
		}
	})

	// Eight spawns at a time, each followed by its delete: here a watch
	// per spawn competes with the others for the API server.
	b.Run("backend-parallel", func(b *testing.B) {
		be := benchBackend(b, kc, ns)
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				id := messages.NewSessionID()
				ctx, done := context.WithTimeout(context.Background(), 60*time.Second)
				_, err := be.Start(ctx, provisioner.Spec{SessionID: id})
				_ = be.Stop(ctx, id)
				done()
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("client-go-watch-per-pod-parallel", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				name := "bench-" + messages.NewSessionID()
				err := rawSpawn(client, ns, name)
				_ = client.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("client-go-watch-per-pod", func(b *testing.B) {
		pods := client.CoreV1().Pods(ns)
		for range b.N {
			name := "bench-" + messages.NewSessionID()
			if err := rawSpawn(client, ns, name); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = pods.Delete(context.Background(), name, metav1.DeleteOptions{})
			b.StartTimer()
		}
	})
}

// rawSpawn creates a pod, watches it until Ready, then polls its /status.
func rawSpawn(client kubernetes.Interface, ns, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods := client.CoreV1().Pods(ns)
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		return err
	}
	defer w.Stop()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{kube.LabelManagedBy: kube.ManagedBy}},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{Name: "app", Image: "spawner:latest", Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				Env: []corev1.EnvVar{{Name: "PORT", Value: "8080"}}}}},
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	var ip string
	for ip == "" {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("watch of %s closed", name)
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || ev.Type == watch.Deleted {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
					ip = p.Status.PodIP
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	url := "http://" + net.JoinHostPort(ip, "8080") + "/status"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			st, derr := messages.DecodeAppStatus(resp.Body)
			resp.Body.Close()
			if derr == nil && st.Listening {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// benchBackend runs a backend until the benchmark ends, its informer
// synced by one spawn that is not timed.
func benchBackend(b *testing.B, kubeconfig, ns string) *kube.Backend {
	b.Helper()
	cfg := settings.Overlay(kube.Config{Kubeconfig: kubeconfig, Namespace: ns, Image: "spawner:latest", Route: kube.RoutePodIP,
		CPURequest: "10m", MemRequest: "16Mi", QPS: 100, Burst: 200})
	be, err := kube.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go func() { _ = be.Run(ctx, make(chan provisioner.Exit, 64)) }()
	warm := messages.NewSessionID()
	if _, err := be.Start(ctx, provisioner.Spec{SessionID: warm}); err != nil {
		b.Fatal(err)
	}
	_ = be.Stop(ctx, warm)
	b.ResetTimer()
	return be
}
