package k8s

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// secretWatch follows one Secret by name (a watch limited to it, so get,
// list and watch on that name are all the RBAC it needs).
type secretWatch struct {
	factory informers.SharedInformerFactory
	name    string
	lister  interface {
		Get(name string) (*corev1.Secret, error)
	}
	// changed receives after every add, update or delete of the Secret.
	changed chan struct{}
}

// watchSecret starts following namespace/name; ok is false when ctx ended
// before the watch synced. Call stop when done.
func watchSecret(ctx context.Context, client kubernetes.Interface, namespace, name, what string) (w *secretWatch, ok bool, err error) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := f.Core().V1().Secrets().Informer()
	w = &secretWatch{factory: f, name: name, changed: make(chan struct{}, 1)}
	poke := func(any) {
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, n any) { poke(n) }, DeleteFunc: poke}); err != nil {
		return nil, false, fmt.Errorf("k8s: watch %s: %w", what, err)
	}
	f.Start(ctx.Done())
	w.lister = f.Core().V1().Secrets().Lister().Secrets(namespace)
	return w, cache.WaitForCacheSync(ctx.Done(), inf.HasSynced), nil
}

// get is the Secret as last seen.
func (w *secretWatch) get() (*corev1.Secret, error) { return w.lister.Get(w.name) }

// stop ends the watch.
func (w *secretWatch) stop() { w.factory.Shutdown() }
