package k8s

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
)

// The Pod cache (Config.WatchPods) only spares the pod GET of a review: the
// TokenReview has already proven that the token's pod exists, so the cache is
// asked for the pod's labels, and a pod it does not hold with the token's UID
// is read from the apiserver as before. The cache never refuses a token on its
// own. It lags the apiserver by the watch's delay: a pod deleted a moment ago
// may still be there, but its token is refused by the TokenReview first (bar
// the apiserver's own short cache of valid tokens), and a cached review already
// vouches for a token for up to Config.CacheTTL without looking at the pod.

// PodsCached reports whether reviews read pods from the watch cache
// (Config.WatchPods, once Run's informer has synced).
func (a *Attestor) PodsCached() bool { return a.pods.get() != nil }

// cachedPodLabels returns the labels of ns/name from the watch cache if the
// cache has synced and holds that pod with the token's UID. Otherwise ok is false and the caller
// GETs the pod: it may be newer than the watch has delivered, or the cache
// may still hold a pod of the same name that was deleted and recreated; the
// apiserver decides which (and so whether the token's pod is gone).
func (a *Attestor) cachedPodLabels(ns, name, uid string) (labels.Set, bool) {
	store := a.pods.get()
	if store == nil || uid == "" {
		return nil, false
	}
	obj, exists, err := store.GetByKey(ns + "/" + name)
	if err != nil || !exists {
		return nil, false
	}
	m, isMeta := obj.(*metav1.PartialObjectMetadata)
	if !isMeta || string(m.UID) != uid {
		return nil, false
	}
	return m.Labels, true
}

// watchPods makes the trimmed Pod informer. With Config.Metadata it is a
// metadata-only watch, which the caller starts itself (start is non-nil): the
// apiserver then sends each changed pod's metadata, not its spec and status,
// which in a busy cluster is most of the bytes and the decoding. Without it,
// the typed informer is registered with factory (the factory starts it) and
// trimmed after decoding. Either way its store holds what podLabelsOnly
// returns, so it is read through the store, never through a typed PodLister.
func (a *Attestor) watchPods(factory informers.SharedInformerFactory) (pods cache.SharedIndexInformer, start func(stop <-chan struct{}), err error) {
	if a.cfg.Metadata != nil {
		pods = metadatainformer.NewFilteredMetadataInformer(a.cfg.Metadata, corev1.SchemeGroupVersion.WithResource("pods"),
			metav1.NamespaceAll, serviceResync, cache.Indexers{}, nil).Informer()
		start = pods.Run
	} else {
		pods = factory.Core().V1().Pods().Informer()
	}
	if err := pods.SetTransform(podLabelsOnly); err != nil {
		return nil, nil, fmt.Errorf("k8s: watch pods: %w", err)
	}
	return pods, start, nil
}

// podLabelsOnly trims a Pod to what a review needs (name, namespace, UID,
// resourceVersion, labels), because every replica holds every pod of the
// cluster. It returns PartialObjectMetadata rather than a Pod: the Pod struct
// alone is 1.2 KB even when empty. Measured with the informer's indexes, a pod
// costs about 600 bytes plus its labels (1 KB with four labels; a trimmed
// *corev1.Pod would be 2 KB). The watch still delivers each pod change in
// full; only what is kept is trimmed.
func podLabelsOnly(obj any) (any, error) {
	var m *metav1.ObjectMeta
	switch o := obj.(type) {
	case *corev1.Pod:
		m = &o.ObjectMeta
	case *metav1.PartialObjectMetadata: // a metadata-only watch: drop annotations, managedFields, owners
		m = &o.ObjectMeta
	default:
		return obj, nil // a tombstone
	}
	return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion, Labels: m.Labels,
	}}, nil
}
