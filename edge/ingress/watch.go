package ingress

import (
	"context"
	"fmt"
	"maps"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// watch registers the event handlers; every one of them only enqueues keys.
func (c *Controller) watch() error {
	ing := c.informer.Networking().V1().Ingresses()
	c.ingLister = ing.Lister()
	if _, err := ing.Informer().AddEventHandler(c.enqueuer(KindIngress)); err != nil {
		return fmt.Errorf("ingress: watch ingresses: %w", err)
	}
	if _, err := c.secrets.Core().V1().Secrets().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: c.secretDeleted,
	}); err != nil {
		return fmt.Errorf("ingress: watch secrets: %w", err)
	}
	if _, err := c.config.Core().V1().ConfigMaps().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.enqueueAll() },
		UpdateFunc: func(any, any) { c.enqueueAll() },
		DeleteFunc: func(any) { c.enqueueAll() },
	}); err != nil {
		return fmt.Errorf("ingress: watch issuers: %w", err)
	}
	return nil
}

// enqueuer is the event handler of one kind's informer: every change enqueues the
// object's Key.
func (c *Controller) enqueuer(kind Kind) cache.ResourceEventHandlerFuncs {
	enqueue := func(obj any) {
		if ref, err := cache.DeletionHandlingObjectToName(obj); err == nil {
			c.queue.Add(Key{Kind: kind, Namespace: ref.Namespace, Name: ref.Name})
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(old, obj any) {
			if !statusOnly(old, obj) {
				enqueue(obj)
			}
		},
		DeleteFunc: enqueue,
	}
}

// statusOnly says an update changed neither the spec (generation) nor the
// annotations: a Gateway's or Ingress's status, which its own controller rewrites
// often, asks for no certificate. A resync (same resourceVersion) is not
// status-only: it is the periodic re-examination.
func statusOnly(old, obj any) bool {
	o, ok1 := old.(metav1.Object)
	n, ok2 := obj.(metav1.Object)
	if !ok1 || !ok2 || o.GetResourceVersion() == n.GetResourceVersion() {
		return false
	}
	return o.GetGeneration() == n.GetGeneration() && maps.Equal(o.GetAnnotations(), n.GetAnnotations())
}

// enqueueAll enqueues every watched object (the issuers changed).
func (c *Controller) enqueueAll() {
	add := func(kind Kind, store cache.Store) {
		for _, obj := range store.List() {
			if ref, err := cache.ObjectToName(obj); err == nil {
				c.queue.Add(Key{Kind: kind, Namespace: ref.Namespace, Name: ref.Name})
			}
		}
	}
	add(KindIngress, c.informer.Networking().V1().Ingresses().Informer().GetStore())
	if store := c.gateways.store(); store != nil {
		add(KindGateway, store)
	}
	if _, store := c.gateways.listenerSets(); store != nil {
		add(KindListenerSet, store)
	}
}

// secretDeleted enqueues the object owning a deleted certificate Secret; its
// ProcessItem wakes the certificate, whose Manager writes the Secret back.
func (c *Controller) secretDeleted(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	c.mu.Lock()
	owner, ok := c.owners[key] // a certificate name is the Secret's namespace/name
	c.mu.Unlock()
	if ok {
		c.queue.Add(owner)
	}
}

// issuers parses the issuers ConfigMap from the informer's cache; credential Secrets
// are read from the API (they are few, and certmesh does not cache Secrets it does not
// manage).
func (c *Controller) issuers(ctx context.Context) (map[string]Issuer, error) {
	cm, err := c.config.Core().V1().ConfigMaps().Lister().ConfigMaps(c.cfg.Namespace).Get(IssuersConfigMap)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: ConfigMap %s/%s not found", ErrInvalidIssuers, c.cfg.Namespace, IssuersConfigMap)
	}
	if err != nil {
		return nil, fmt.Errorf("ingress: issuers: %w", err)
	}
	return ParseIssuers(ctx, []byte(cm.Data[IssuersKey]), c.readSecret)
}

func (c *Controller) readSecret(ctx context.Context, name string) (map[string][]byte, error) {
	sec, err := c.cfg.Client.CoreV1().Secrets(c.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return sec.Data, nil
}
