package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// hostEnv lists the fakelet's own variables that processes inherit. Nothing
// else leaks through (notably not KUBECONFIG), so an app sees roughly what
// it would see in a container.
var hostEnv = []string{"PATH", "HOME", "TMPDIR", "LANG", "TZ", "GOCOVERDIR"}

// envResolver builds a container's environment the way the kubelet does:
// env and envFrom, with $(VAR) references, fieldRefs, and ConfigMap and
// Secret keys read from the API.
type envResolver struct {
	client kubernetes.Interface
}

// build returns the process environment for spec in pod: inherited host
// variables, then extra (fakelet-provided defaults such as PORT), then the
// container's own env, then forced (values that must not be overridden).
func (r *envResolver) build(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, extra, forced map[string]string) ([]string, error) {
	var order []string
	vars := map[string]string{}
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, k := range hostEnv {
		if v, ok := os.LookupEnv(k); ok {
			set(k, v)
		}
	}
	for k, v := range extra {
		set(k, v)
	}

	for _, from := range spec.EnvFrom {
		data, err := r.sourceData(ctx, pod.Namespace, from)
		if err != nil {
			return nil, err
		}
		for k, v := range data {
			set(from.Prefix+k, v)
		}
	}
	// $(VAR) may only refer to variables defined before it, as in the kubelet.
	defined := map[string]string{}
	for _, e := range spec.Env {
		v := e.Value
		if e.ValueFrom != nil {
			var err error
			if v, err = r.valueFrom(ctx, pod, e.ValueFrom); err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
		} else {
			v = expansion.Expand(v, expansion.MappingFuncFor(defined))
		}
		defined[e.Name] = v
		set(e.Name, v)
	}
	for k, v := range forced {
		set(k, v)
	}

	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env, nil
}

func (r *envResolver) sourceData(ctx context.Context, ns string, from corev1.EnvFromSource) (map[string]string, error) {
	switch {
	case from.ConfigMapRef != nil:
		cm, err := r.client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && optional(from.ConfigMapRef.Optional) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("configmap %q: %w", from.ConfigMapRef.Name, err)
		}
		return cm.Data, nil
	case from.SecretRef != nil:
		s, err := r.client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && optional(from.SecretRef.Optional) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("secret %q: %w", from.SecretRef.Name, err)
		}
		data := map[string]string{}
		for k, v := range s.Data {
			data[k] = string(v)
		}
		return data, nil
	}
	return nil, nil
}

func (r *envResolver) valueFrom(ctx context.Context, pod *corev1.Pod, src *corev1.EnvVarSource) (string, error) {
	switch {
	case src.FieldRef != nil:
		return fieldValue(pod, src.FieldRef.FieldPath)
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := r.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && optional(ref.Optional) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("configmap %q: %w", ref.Name, err)
		}
		v, ok := cm.Data[ref.Key]
		if !ok && !optional(ref.Optional) {
			return "", fmt.Errorf("configmap %q has no key %q", ref.Name, ref.Key)
		}
		return v, nil
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := r.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && optional(ref.Optional) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("secret %q: %w", ref.Name, err)
		}
		v, ok := s.Data[ref.Key]
		if !ok && !optional(ref.Optional) {
			return "", fmt.Errorf("secret %q has no key %q", ref.Name, ref.Key)
		}
		return string(v), nil
	}
	// resourceFieldRef and file keys have no meaning for a local process.
	return "", nil
}

// fieldValue resolves the downward-API fields a pod may put in its env.
func fieldValue(pod *corev1.Pod, path string) (string, error) {
	if key, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	}
	return "", fmt.Errorf("unsupported fieldPath %q", path)
}

// subscript parses `prefix['key']`.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

func optional(b *bool) bool { return b != nil && *b }
