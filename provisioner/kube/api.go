package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"
)

// Client is the part of the core/v1 API the backend uses. NewClient's
// speaks to an API server; tests may adapt client-go's typed clients,
// whose pods and services satisfy PodClient and ServiceClient.
type Client interface {
	Pods(namespace string) PodClient
	Services(namespace string) ServiceClient
}

// PodClient is the backend's use of one namespace's Pods.
type PodClient interface {
	Create(ctx context.Context, pod *corev1.Pod, opts metav1.CreateOptions) (*corev1.Pod, error)
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Pod, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// ServiceClient is the backend's use of one namespace's Services.
type ServiceClient interface {
	Create(ctx context.Context, svc *corev1.Service, opts metav1.CreateOptions) (*corev1.Service, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// NewRESTClient returns a client of the API group version gv whose types
// add registers, with a scheme of that group alone. client-go's typed
// clientset, its scheme and its informer factory register every API
// group, which links all of them into the binary: a quarter of its code.
func NewRESTClient(rc *rest.Config, gv schema.GroupVersion, add func(*runtime.Scheme) error) (*rest.RESTClient, runtime.ParameterCodec, error) {
	scheme := runtime.NewScheme()
	// As client-go's scheme does: the unversioned options and watch
	// events, then the group's own types.
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	if err := add(scheme); err != nil {
		return nil, nil, fmt.Errorf("kubernetes scheme of %s: %w", gv, err)
	}
	codecs := serializer.NewCodecFactory(scheme)
	c := rest.CopyConfig(rc)
	c.GroupVersion = &gv
	c.APIPath = "/apis"
	if gv.Group == "" {
		c.APIPath = "/api"
	}
	c.NegotiatedSerializer = rest.CodecFactoryForGeneratedClient(scheme, codecs).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	client, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client of %s: %w", gv, err)
	}
	return client, runtime.NewParameterCodec(scheme), nil
}

// NewClient returns the backend's client of the API server rc names.
func NewClient(rc *rest.Config) (Client, error) {
	client, params, err := NewRESTClient(rc, corev1.SchemeGroupVersion, corev1.AddToScheme)
	if err != nil {
		return nil, err
	}
	return &coreClient{client: client, params: params}, nil
}

// coreClient serves pods and services with client-go's generic typed
// client, as the generated core/v1 client does, protobuf included.
type coreClient struct {
	client *rest.RESTClient
	params runtime.ParameterCodec
}

func (c *coreClient) Pods(namespace string) PodClient {
	return gentype.NewClientWithList[*corev1.Pod, *corev1.PodList]("pods", c.client, c.params, namespace,
		func() *corev1.Pod { return &corev1.Pod{} }, func() *corev1.PodList { return &corev1.PodList{} },
		gentype.PrefersProtobuf[*corev1.Pod]())
}

func (c *coreClient) Services(namespace string) ServiceClient {
	return gentype.NewClient[*corev1.Service]("services", c.client, c.params, namespace,
		func() *corev1.Service { return &corev1.Service{} }, gentype.PrefersProtobuf[*corev1.Service]())
}
