package secretstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ErrBadSecretName is returned for an edge Secret not named "namespace/name".
var ErrBadSecretName = errors.New("secretstore: edge Secret must be named namespace/name")

// Watcher hands named kubernetes.io/tls Secrets to an ingress gateway's
// agent, which serves them over SDS under "namespace/name". It lists and
// watches each Secret by name only (a field selector), so a Role that
// grants get, list and watch on exactly those resourceNames is all the
// gateway needs: it can read no other Secret.
type Watcher struct {
	client kubernetes.Interface
	refs   [][2]string
	log    *slog.Logger

	mu      sync.RWMutex
	certs   map[string][2][]byte
	changed chan struct{}
}

// NewWatcher checks the names; it does not contact the API server.
func NewWatcher(client kubernetes.Interface, names []string, log *slog.Logger) (*Watcher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{client: client, log: log, certs: map[string][2][]byte{}, changed: make(chan struct{})}
	for _, n := range names {
		ns, name, ok := strings.Cut(n, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("%w: %q", ErrBadSecretName, n)
		}
		w.refs = append(w.refs, [2]string{ns, name})
	}
	return w, nil
}

// Run reads each Secret once — so a missing grant is a clear error at
// start, not a silent retry loop — then follows them until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	for _, r := range w.refs {
		if _, err := w.client.CoreV1().Secrets(r[0]).Get(ctx, r[1], metav1.GetOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("secretstore: edge Secret %s/%s: %w", r[0], r[1], err)
		}
	}
	for _, r := range w.refs {
		f := informers.NewSharedInformerFactoryWithOptions(w.client, 0, informers.WithNamespace(r[0]),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", r[1]).String()
			}))
		inf := f.Core().V1().Secrets().Informer()
		key := r[0] + "/" + r[1]
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { w.update(key, obj) },
			UpdateFunc: func(_, obj any) { w.update(key, obj) },
			DeleteFunc: func(any) { w.log.Warn("edge Secret deleted; keeping the last certificate", "secret", key) },
		}); err != nil {
			return fmt.Errorf("secretstore: watch %s: %w", key, err)
		}
		f.Start(ctx.Done())
		defer f.Shutdown()
	}
	<-ctx.Done()
	return nil
}

// update keeps a Secret's certificate and key and wakes the SDS streams.
func (w *Watcher) update(key string, obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	crt, k := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(k) == 0 {
		w.log.Warn("edge Secret has no tls.crt/tls.key yet", "secret", key)
		return
	}
	w.mu.Lock()
	w.certs[key] = [2][]byte{crt, k}
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// EdgeCertificate returns the Secret's tls.crt and tls.key.
func (w *Watcher) EdgeCertificate(name string) ([]byte, []byte, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	c, ok := w.certs[name]
	return c[0], c[1], ok
}

// Changed is closed at the next change of any watched Secret.
func (w *Watcher) Changed() <-chan struct{} {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.changed
}

// Names are the "namespace/name" resources this watcher serves.
func (w *Watcher) Names() []string {
	out := make([]string, 0, len(w.refs))
	for _, r := range w.refs {
		out = append(out, r[0]+"/"+r[1])
	}
	return out
}
