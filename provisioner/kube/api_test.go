package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/spawnerhq/spawner/messages"
	"github.com/spawnerhq/spawner/provisioner"
)

// podStub serves one namespace's pods as an API server does, in JSON:
// a list, or a watch that streams the pods (ending the initial ones with
// a bookmark when asked to) and then the pods sent on later.
type podStub struct {
	t     *testing.T
	pods  []corev1.Pod
	later chan corev1.Pod

	mu        sync.Mutex
	selectors []string
	accepts   []string
}

func (s *podStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/namespaces/spawner/pods" || r.Method != http.MethodGet {
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	s.selectors = append(s.selectors, q.Get("labelSelector"))
	s.accepts = append(s.accepts, r.Header.Get("Accept"))
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if q.Get("watch") != "true" {
		list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, Items: s.pods}
		list.ResourceVersion = "1"
		_ = json.NewEncoder(w).Encode(list)
		return
	}
	enc := json.NewEncoder(w)
	send := func(typ string, obj any) {
		if err := enc.Encode(map[string]any{"type": typ, "object": obj}); err != nil {
			s.t.Errorf("watch: %v", err)
		}
		w.(http.Flusher).Flush()
	}
	if q.Get("sendInitialEvents") == "true" {
		for _, p := range s.pods {
			send("ADDED", p)
		}
		send("BOOKMARK", corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{ResourceVersion: "1", Annotations: map[string]string{"k8s.io/initial-events-end": "true"}}})
	} else {
		w.(http.Flusher).Flush()
	}
	for {
		select {
		case p := <-s.later:
			send("ADDED", p)
		case <-r.Context().Done():
			return
		}
	}
}

func stubPod(id string, rv int) corev1.Pod {
	return corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: ObjectName(id), Namespace: "spawner", ResourceVersion: fmt.Sprint(rv),
			Labels: map[string]string{LabelManagedBy: ManagedBy, LabelSessionID: id}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"},
	}
}

// TestClientListsAndWatchesPods runs the backend's own client, with its
// scheme of core/v1 alone, against a stub API server: the informer must
// decode the pods it lists and those it is sent, ask for the managed
// pods only, and offer protobuf as client-go's typed client does.
func TestClientListsAndWatchesPods(t *testing.T) {
	first, second := messages.NewSessionID(), messages.NewSessionID()
	stub := &podStub{t: t, pods: []corev1.Pod{stubPod(first, 1)}, later: make(chan corev1.Pod, 1)}
	srv := httptest.NewServer(stub)
	t.Cleanup(srv.Close)
	cfg := baseConfig()
	cfg.Route = RoutePodIP
	b, err := NewWithConfig(cfg, &rest.Config{Host: srv.URL}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, make(chan provisioner.Exit, 4)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	ids := func() map[string]bool {
		list, err := b.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, inst := range list {
			out[inst.SessionID] = true
		}
		return out
	}
	if got := ids(); len(got) != 1 || !got[first] {
		t.Fatalf("listed %v, want %s", got, first)
	}
	stub.later <- stubPod(second, 2)
	deadline := time.Now().Add(5 * time.Second)
	for got := ids(); !got[second]; got = ids() {
		if time.Now().After(deadline) {
			t.Fatalf("listed %v: the watched pod %s never came", got, second)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stub.mu.Lock()
	defer stub.mu.Unlock()
	for _, sel := range stub.selectors {
		if sel != managedSelector {
			t.Errorf("asked for pods %q, want %q", sel, managedSelector)
		}
	}
	for _, accept := range stub.accepts {
		if !strings.HasPrefix(accept, "application/vnd.kubernetes.protobuf") {
			t.Errorf("asked for pods as %q, want protobuf first", accept)
		}
	}
}
