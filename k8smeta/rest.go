package k8smeta

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// API is the part of the Kubernetes API the metadata uses.
type API interface {
	ListPods(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	WatchPods(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	GetReplicaSet(ctx context.Context, namespace, name string) (*appsv1.ReplicaSet, error)
	GetJob(ctx context.Context, namespace, name string) (*batchv1.Job, error)
}

// scheme knows only the types the metadata reads. client-go's typed
// clients register every API group of Kubernetes, which more than doubles
// the agent's binary.
var (
	scheme     = runtime.NewScheme()
	codecs     = serializer.NewCodecFactory(scheme)
	paramCodec = runtime.NewParameterCodec(scheme)
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
}

// restAPI is API over three REST clients (core/v1, apps/v1, batch/v1).
type restAPI struct{ core, apps, batch *rest.RESTClient }

func newRESTAPI(base *rest.Config) (*restAPI, error) {
	client := func(gv schema.GroupVersion, path string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(base)
		c.GroupVersion, c.APIPath = &gv, path
		c.NegotiatedSerializer = codecs.WithoutConversion()
		c.ContentType = runtime.ContentTypeJSON
		rc, err := rest.RESTClientFor(c)
		if err != nil {
			return nil, fmt.Errorf("creating the %s client: %w", gv, err)
		}
		return rc, nil
	}
	var a restAPI
	var err error
	if a.core, err = client(corev1.SchemeGroupVersion, "/api"); err != nil {
		return nil, err
	}
	if a.apps, err = client(appsv1.SchemeGroupVersion, "/apis"); err != nil {
		return nil, err
	}
	if a.batch, err = client(batchv1.SchemeGroupVersion, "/apis"); err != nil {
		return nil, err
	}
	return &a, nil
}

func (a *restAPI) ListPods(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	out := &corev1.PodList{}
	err := a.core.Get().Resource("pods").VersionedParams(&opts, paramCodec).Do(ctx).Into(out)
	return out, err
}

func (a *restAPI) WatchPods(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return a.core.Get().Resource("pods").VersionedParams(&opts, paramCodec).Watch(ctx)
}

func (a *restAPI) GetReplicaSet(ctx context.Context, ns, name string) (*appsv1.ReplicaSet, error) {
	out := &appsv1.ReplicaSet{}
	err := a.apps.Get().Namespace(ns).Resource("replicasets").Name(name).Do(ctx).Into(out)
	return out, err
}

func (a *restAPI) GetJob(ctx context.Context, ns, name string) (*batchv1.Job, error) {
	out := &batchv1.Job{}
	err := a.batch.Get().Namespace(ns).Resource("jobs").Name(name).Do(ctx).Into(out)
	return out, err
}
