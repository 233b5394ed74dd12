package k8s

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/tools/cache"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// podDNSNames are the DNS names a pod may claim: <svc>.<ns>.svc and
// <svc>.<ns>.svc.<cluster domain> for every Service in its namespace whose
// selector matches the pod's labels. A token not bound to a pod gets none.
func (a *Attestor) podDNSNames(ctx context.Context, ns, podName, podUID string) ([]string, error) {
	if podName == "" {
		return nil, nil
	}
	podLabels, err := a.tokenPodLabels(ctx, ns, podName, podUID)
	if err != nil {
		return nil, err
	}
	svcs, err := a.servicesIn(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("%w: list services: %v", ErrReviewUnavailable, err)
	}
	var names []string
	for _, s := range svcs {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			continue
		}
		names = append(names, s.Name+"."+ns+".svc", s.Name+"."+ns+".svc."+a.cfg.ClusterDomain)
	}
	slices.Sort(names)
	return names, nil
}

// tokenPodLabels are the labels of the token's pod: from the watch cache when
// it holds the pod with the token's UID (Config.WatchPods), else from the
// apiserver, which tells a deleted or recreated pod (ErrPodGone) from one the
// watch has not delivered yet.
func (a *Attestor) tokenPodLabels(ctx context.Context, ns, podName, podUID string) (labels.Set, error) {
	if l, ok := a.cachedPodLabels(ns, podName, podUID); ok {
		return l, nil
	}
	pod, err := a.cfg.Client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("%w: %s/%s", ErrPodGone, ns, podName)
	case err != nil:
		return nil, fmt.Errorf("%w: get pod: %v", ErrReviewUnavailable, err)
	case podUID != "" && string(pod.UID) != podUID:
		return nil, fmt.Errorf("%w: %s/%s was recreated", ErrPodGone, ns, podName)
	}
	return pod.Labels, nil
}

// servicesIn reads the Services of ns from the informer when Run keeps one, else
// from the apiserver.
func (a *Attestor) servicesIn(ctx context.Context, ns string) ([]*corev1.Service, error) {
	if lister := a.services.get(); lister != nil {
		return lister.Services(ns).List(labels.Everything())
	}
	list, err := a.cfg.Client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]*corev1.Service, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// synced holds what Run publishes once an informer's cache has synced (the
// Service lister, the Pod store): nil before that and after Run ends, when
// reviews ask the apiserver instead.
type synced[T any] struct {
	mu sync.Mutex
	v  T
}

func (s *synced[T]) get() T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.v
}

func (s *synced[T]) set(v T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.v = v
}

// ServicesCached reports whether reviews read Services from the watch cache
// (Config.WatchServices, once Run's informer has synced).
func (a *Attestor) ServicesCached() bool { return a.services.get() != nil }

// serviceResync is the informers' resync period; the watches keep them current.
const serviceResync = 10 * time.Minute

// Run keeps the Service informer (Config.WatchServices) and the Pod informer
// (Config.WatchPods) until ctx ends; with neither, Run returns at once. Until an
// informer has synced, reviews read what it would hold from the apiserver as
// before. Only the name, namespace and selector of each Service are kept, and
// the name, namespace, UID and labels of each pod.
func (a *Attestor) Run(ctx context.Context) error {
	if !a.cfg.WatchServices && !a.cfg.WatchPods {
		return nil
	}
	factory := informers.NewSharedInformerFactory(a.cfg.Client, serviceResync)
	defer factory.Shutdown()
	var svcs coreinformers.ServiceInformer
	if a.cfg.WatchServices {
		svcs = factory.Core().V1().Services()
		if err := svcs.Informer().SetTransform(selectorOnly); err != nil {
			return fmt.Errorf("k8s: watch services: %w", err)
		}
	}
	var pods cache.SharedIndexInformer
	var done sync.WaitGroup // a metadata-only Pod informer, started outside the factory
	defer done.Wait()       // every return after its start is after ctx ended, which stops it
	if a.cfg.WatchPods {
		var start func(stop <-chan struct{})
		var err error
		if pods, start, err = a.watchPods(factory); err != nil {
			return err
		}
		if start != nil {
			done.Go(func() { start(ctx.Done()) })
		}
	}
	factory.Start(ctx.Done())
	// Each cache is used as soon as it has synced: Services (few) need not wait
	// for the pods of a large cluster.
	if svcs != nil {
		if !cache.WaitForCacheSync(ctx.Done(), svcs.Informer().HasSynced) {
			return nil // ctx ended
		}
		a.services.set(svcs.Lister())
		defer a.services.set(nil)
		a.cfg.Logger.Info("k8s: Service selectors cached; reviews no longer list Services")
	}
	if pods != nil {
		if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced) {
			return nil // ctx ended
		}
		a.pods.set(pods.GetStore())
		defer a.pods.set(nil)
		a.cfg.Logger.Info("k8s: pods cached; reviews no longer get the token's pod")
	}
	<-ctx.Done()
	return nil
}

// selectorOnly trims a Service to what DNS names need, so the cache costs a few
// hundred bytes per Service whatever its annotations and status.
func selectorOnly(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil // a tombstone
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, UID: svc.UID, ResourceVersion: svc.ResourceVersion},
		Spec:       corev1.ServiceSpec{Selector: svc.Spec.Selector},
	}, nil
}
