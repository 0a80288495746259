// Package k8smeta maps container ids to Kubernetes pod metadata: namespace,
// pod, container and workload names as semantic-convention resource
// attributes, and service.* as the conventions' Kubernetes guidance orders
// them. It watches only the pods of the agent's own node (a spec.nodeName
// field selector), so its memory follows the node's pods, not the cluster's.
//
// An unreachable API server never stops the agent: what was cached stays,
// processes in unknown containers keep their container.id, and every failed
// list, watch or owner lookup is counted (otelbee.kubernetes.errors).
package k8smeta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/otelbee/otelbee/process/identity"
)

// Config selects and tunes the Kubernetes metadata.
type Config struct {
	Enabled bool
	// NodeName is the node whose pods are watched (the chart sets it from
	// the downward API's spec.nodeName). Required.
	NodeName string
	// Kubeconfig is a kubeconfig file; empty uses the in-cluster service
	// account.
	Kubeconfig string
	// AppLabels also reads service.* from app.kubernetes.io/* labels.
	AppLabels bool
	// SyncTimeout is how long Start waits for the first list of pods, so
	// that the first identities already carry metadata (default 10s).
	SyncTimeout time.Duration
}

// maxOwners bounds the ReplicaSet and Job lookup caches: owners come and go
// with rollouts, and only the node's pods' owners are ever looked up.
const maxOwners = 4096

// Source is the metadata of the node's pods, by container id. It implements
// identity.ContainerSource.
type Source struct {
	cfg    Config
	client API
	log    *slog.Logger
	stop   chan struct{}
	done   sync.WaitGroup

	mu         sync.RWMutex
	containers map[string]identity.ContainerInfo // container id -> metadata
	byPod      map[string][]string               // pod key -> its container ids
	owners     map[string]string                 // "rs/ns/name" or "job/ns/name" -> owner name

	errRequests  *atomic.Int64 // failed API requests of any kind
	errListWatch atomic.Int64
	errOwner     atomic.Int64
	pods         atomic.Int64
	synced       atomic.Bool
}

// Start connects to the API server and watches the node's pods. It returns
// once the first list arrived or cfg.SyncTimeout passed (the watch goes on
// retrying in the background: an unreachable API server is no error here).
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Source, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("starting kubernetes metadata: no node name (set OTELBEE_KUBERNETES_NODE_NAME from the downward API's spec.nodeName)")
	}
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("building the kubernetes client config: %w", err)
	}
	rc.UserAgent = "otelbee"
	// Every request that fails is counted: the reflector retries a refused
	// connection without reporting it to its error handler.
	failed := &atomic.Int64{}
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countFailures{rt, failed} })
	api, err := newRESTAPI(rc)
	if err != nil {
		return nil, fmt.Errorf("creating the kubernetes client: %w", err)
	}
	return start(ctx, cfg, api, log, failed)
}

// countFailures counts requests that got no answer or a server error.
type countFailures struct {
	next   http.RoundTripper
	failed *atomic.Int64
}

func (c countFailures) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil || resp.StatusCode >= 500 {
		c.failed.Add(1)
	}
	return resp, err
}

// StartWithClient is Start with a given client (its failed requests are
// not counted).
func StartWithClient(ctx context.Context, cfg Config, client API, log *slog.Logger) (*Source, error) {
	return start(ctx, cfg, client, log, &atomic.Int64{})
}

func start(ctx context.Context, cfg Config, client API, log *slog.Logger, failed *atomic.Int64) (*Source, error) {
	if cfg.SyncTimeout == 0 {
		cfg.SyncTimeout = 10 * time.Second
	}
	s := &Source{cfg: cfg, client: client, log: log, stop: make(chan struct{}), errRequests: failed,
		containers: map[string]identity.ContainerInfo{}, byPod: map[string][]string{}, owners: map[string]string{}}
	// The API server applies the field selector: pods of other nodes are
	// neither sent nor cached.
	node := fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = node
			return client.ListPods(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = node
			return client.WatchPods(ctx, o)
		},
	}
	// A client that cannot stream the initial list as watch events (the
	// tests' fake) says so, as the informer factories ask it.
	inf := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, client), &corev1.Pod{}, 0, cache.Indexers{})
	if err := inf.SetTransform(slim); err != nil {
		return nil, fmt.Errorf("setting the pod transform: %w", err)
	}
	if err := inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		n := s.errListWatch.Add(1)
		// The reflector retries with backoff; log the first and then
		// every 100th so an outage does not flood the log.
		if n == 1 || n%100 == 0 {
			log.Warn("kubernetes API: listing or watching pods failed; metadata of new pods waits for it", "error", err, "errors", n)
		}
	}); err != nil {
		return nil, fmt.Errorf("setting the watch error handler: %w", err)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.update(ctx, obj) },
		UpdateFunc: func(_, obj any) { s.update(ctx, obj) },
		DeleteFunc: s.remove,
	}); err != nil {
		return nil, fmt.Errorf("adding the pod handler: %w", err)
	}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		inf.Run(s.stop)
	}()
	syncCtx, cancel := context.WithTimeout(ctx, cfg.SyncTimeout)
	defer cancel()
	if cache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		s.synced.Store(true)
		log.Info("kubernetes metadata: watching this node's pods", "node", cfg.NodeName, "pods", s.pods.Load())
	} else {
		log.Warn("kubernetes metadata: the API server did not answer in time; going on with container ids, metadata follows when it answers",
			"node", cfg.NodeName, "timeout", cfg.SyncTimeout)
		go func() {
			if cache.WaitForCacheSync(s.stop, inf.HasSynced) {
				s.synced.Store(true)
				log.Info("kubernetes metadata: watching this node's pods", "node", cfg.NodeName, "pods", s.pods.Load())
			}
		}()
	}
	return s, nil
}

// Close stops the watch.
func (s *Source) Close() {
	close(s.stop)
	s.done.Wait()
}

// Container implements identity.ContainerSource.
func (s *Source) Container(id string) (identity.ContainerInfo, bool) {
	s.mu.RLock()
	info, ok := s.containers[id]
	s.mu.RUnlock()
	return info, ok
}

// Synced reports whether the node's pods were listed.
func (s *Source) Synced() bool { return s.synced.Load() }

// FailedRequests is the number of API requests that failed.
func (s *Source) FailedRequests() int64 { return s.errRequests.Load() }

// Pods is the number of pods cached.
func (s *Source) Pods() int64 { return s.pods.Load() }

// Containers is the number of containers with metadata.
func (s *Source) Containers() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.containers)
}

func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

func (s *Source) update(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	w := directOwner(pod.OwnerReferences)
	if w.replicaSet != "" {
		w.deployment = s.owner(ctx, "rs", pod.Namespace, w.replicaSet)
	}
	if w.job != "" {
		w.cronJob = s.owner(ctx, "job", pod.Namespace, w.job)
	}
	ids := containerIDs(pod)
	key := podKey(pod)
	s.mu.Lock()
	defer s.mu.Unlock()
	old, known := s.byPod[key]
	for _, id := range old {
		delete(s.containers, id)
	}
	list := make([]string, 0, len(ids))
	for id, name := range ids {
		s.containers[id] = containerInfo(pod, name, w, s.cfg.NodeName, s.cfg.AppLabels)
		list = append(list, id)
	}
	s.byPod[key] = list
	if !known {
		s.pods.Add(1)
	}
}

func (s *Source) remove(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := podKey(pod)
	s.mu.Lock()
	defer s.mu.Unlock()
	ids, ok := s.byPod[key]
	if !ok {
		return
	}
	for _, id := range ids {
		delete(s.containers, id)
	}
	delete(s.byPod, key)
	s.pods.Add(-1)
}

// owner looks up the controller of a ReplicaSet (its Deployment) or a Job
// (its CronJob), once per object: the answer never changes for a name's
// life. A failed lookup is counted and retried at the pod's next update.
func (s *Source) owner(ctx context.Context, kind, ns, name string) string {
	key := kind + "/" + ns + "/" + name
	s.mu.RLock()
	v, ok := s.owners[key]
	s.mu.RUnlock()
	if ok {
		return v
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var refs []metav1.OwnerReference
	var err error
	switch kind {
	case "rs":
		var rs *appsv1.ReplicaSet
		if rs, err = s.client.GetReplicaSet(ctx, ns, name); err == nil {
			refs = rs.OwnerReferences
		}
		v = controllerOf(refs, "Deployment")
	case "job":
		var job *batchv1.Job
		if job, err = s.client.GetJob(ctx, ns, name); err == nil {
			refs = job.OwnerReferences
		}
		v = controllerOf(refs, "CronJob")
	}
	if err != nil && !apierrors.IsNotFound(err) {
		n := s.errOwner.Add(1)
		if n == 1 || n%100 == 0 {
			s.log.Warn("kubernetes API: looking up a pod's owner failed; its workload name is missing until the pod's next update",
				"kind", kind, "namespace", ns, "name", name, "error", err, "errors", n)
		}
		return ""
	}
	s.mu.Lock()
	if len(s.owners) >= maxOwners {
		clear(s.owners)
	}
	s.owners[key] = v
	s.mu.Unlock()
	return v
}

// RegisterMetrics creates the otelbee.kubernetes.* self-metrics.
func (s *Source) RegisterMetrics(m metric.Meter) (metric.Registration, error) {
	errs, err := m.Int64ObservableCounter("otelbee.kubernetes.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Failed Kubernetes API calls of the pod metadata, by operation (request: any request that got no answer or a server error; list_watch: failed lists and watches of the node's pods the watch reported; owner: failed lookups of a ReplicaSet's or Job's owner)."))
	if err != nil {
		return nil, err
	}
	pods, err := m.Int64ObservableGauge("otelbee.kubernetes.pods", metric.WithUnit("{pod}"),
		metric.WithDescription("Pods of this node whose metadata is cached."))
	if err != nil {
		return nil, err
	}
	synced, err := m.Int64ObservableGauge("otelbee.kubernetes.synced",
		metric.WithDescription("1 once the node's pods were listed from the API server."))
	if err != nil {
		return nil, err
	}
	request := metric.WithAttributes(attribute.String("operation", "request"))
	listWatch := metric.WithAttributes(attribute.String("operation", "list_watch"))
	owner := metric.WithAttributes(attribute.String("operation", "owner"))
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(errs, s.errRequests.Load(), request)
		o.ObserveInt64(errs, s.errListWatch.Load(), listWatch)
		o.ObserveInt64(errs, s.errOwner.Load(), owner)
		o.ObserveInt64(pods, s.pods.Load())
		var v int64
		if s.synced.Load() {
			v = 1
		}
		o.ObserveInt64(synced, v)
		return nil
	}, errs, pods, synced)
}
