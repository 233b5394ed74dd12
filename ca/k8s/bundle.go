package k8s

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca/wire"
)

// clusterTrustBundleKey is the work-queue key of the ClusterTrustBundle;
// namespace names cannot contain '/', so it never clashes.
const clusterTrustBundleKey = "/clustertrustbundle"

// BundleSource is the trust bundle to publish; *ca.CA satisfies it.
type BundleSource interface {
	BundlePEM() []byte
	BundleChanged() <-chan struct{}
}

// PublisherConfig configures a Publisher. Client, Bundle and TrustDomain are required.
type PublisherConfig struct {
	Client      kubernetes.Interface
	Bundle      BundleSource
	TrustDomain spiffeid.TrustDomain
	// ClusterTrustBundle: publish one where the API serves
	// certificates.k8s.io/v1 ClusterTrustBundles (default on; set
	// DisableClusterTrustBundle to skip).
	DisableClusterTrustBundle bool
	// IstioRootCert also keeps the ConfigMap Istio's sidecars mount,
	// wire.IstioRootCertConfigMap (key wire.IstioRootCertKey), in every
	// namespace, so that certmesh can stand in for istiod's CA.
	IstioRootCert bool
	Logger        *slog.Logger
}

// Publisher keeps the ConfigMap certmesh-trust-bundle (key ca.crt) — and,
// with IstioRootCert, istio-ca-root-cert (key root-cert.pem) — in every
// namespace equal to the CA's trust bundle: created in new namespaces,
// recreated when deleted, rewritten when edited or when the bundle changes;
// and a ClusterTrustBundle named certmesh-<trust domain>. It is
// leader-only work: run it as a leader.Runner.
type Publisher struct {
	cfg   PublisherConfig
	cms   []published
	nsL   corelisters.NamespaceLister
	cmL   map[string]corelisters.ConfigMapLister // by ConfigMap name
	queue workqueue.TypedRateLimitingInterface[string]
	ctb   bool
}

// published is one ConfigMap kept in every namespace: its name and what it
// holds for a bundle.
type published struct {
	name string
	data func(pem []byte) map[string]string
}

// NewPublisher checks cfg; it starts nothing.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Client == nil || cfg.Bundle == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("k8s: publisher config: Client, Bundle and TrustDomain are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{cfg: cfg}
	p.cms = []published{{name: wire.TrustBundleConfigMap, data: p.desiredData}}
	if cfg.IstioRootCert {
		p.cms = append(p.cms, published{name: wire.IstioRootCertConfigMap, data: istioRootCertData})
	}
	return p, nil
}

// ClusterTrustBundleName is the name of the published ClusterTrustBundle.
func (p *Publisher) ClusterTrustBundleName() string {
	return "certmesh-" + strings.ReplaceAll(p.cfg.TrustDomain.Name(), "_", "-")
}

// Run starts the informers, waits for them to sync, then works the queue
// until ctx ends. A fresh set of informers per call: a replica that becomes
// leader again starts from a clean cache.
func (p *Publisher) Run(ctx context.Context) error {
	p.queue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "certmesh-trust-bundle"})
	defer p.queue.ShutDown()
	all := informers.NewSharedInformerFactory(p.cfg.Client, 0)
	nsInf := all.Core().V1().Namespaces()
	p.nsL = nsInf.Lister()
	enqueueNS := func(obj any) {
		if m, err := metaOf(obj); err == nil {
			p.queue.Add(m.GetName())
		}
	}
	if _, err := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueueNS}); err != nil {
		return err
	}
	all.Start(ctx.Done())
	defer all.Shutdown()
	synced := []cache.InformerSynced{nsInf.Informer().HasSynced}
	p.cmL = map[string]corelisters.ConfigMapLister{}
	for _, c := range p.cms {
		f, inf, err := p.watchConfigMaps(c.name)
		if err != nil {
			return err
		}
		f.Start(ctx.Done())
		defer f.Shutdown()
		p.cmL[c.name] = f.Core().V1().ConfigMaps().Lister()
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	p.ctb = !p.cfg.DisableClusterTrustBundle && p.clusterTrustBundleServed()
	go p.watchBundle(ctx)
	for p.processNext(ctx) {
	}
	return nil
}

// watchConfigMaps is an informer on the ConfigMaps named name in every
// namespace (one name per watch: field selectors cannot say "one of"), which
// enqueues the namespace of each one edited or deleted.
func (p *Publisher) watchConfigMaps(name string) (informers.SharedInformerFactory, cache.SharedIndexInformer, error) {
	f := informers.NewSharedInformerFactoryWithOptions(p.cfg.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	}))
	inf := f.Core().V1().ConfigMaps().Informer()
	enqueue := func(obj any) {
		if m, err := metaOf(obj); err == nil {
			p.queue.Add(m.GetNamespace())
		}
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, n any) { enqueue(n) }, DeleteFunc: enqueue})
	return f, inf, err
}

// watchBundle enqueues everything whenever the CA's bundle changes.
func (p *Publisher) watchBundle(ctx context.Context) {
	for {
		changed := p.cfg.Bundle.BundleChanged()
		p.enqueueAll()
		select {
		case <-ctx.Done():
			p.queue.ShutDown()
			return
		case <-changed:
		}
	}
}

func (p *Publisher) enqueueAll() {
	nss, _ := p.nsL.List(labels.Everything())
	for _, ns := range nss {
		p.queue.Add(ns.Name)
	}
	if p.ctb {
		p.queue.Add(clusterTrustBundleKey)
	}
}

func (p *Publisher) processNext(ctx context.Context) bool {
	key, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(key)
	if err := p.ProcessItem(ctx, key); err != nil {
		p.cfg.Logger.Warn("publish trust bundle; will retry", "key", key, "error", err)
		p.queue.AddRateLimited(key)
		return true
	}
	p.queue.Forget(key)
	return true
}

// ProcessItem makes one namespace's ConfigMaps (or, for the
// ClusterTrustBundle key, that object) hold the current bundle. Idempotent:
// it reads the informer caches, decides with a pure comparison, and writes
// only on a difference.
func (p *Publisher) ProcessItem(ctx context.Context, key string) error {
	want := p.cfg.Bundle.BundlePEM()
	if key == clusterTrustBundleKey {
		return p.syncClusterTrustBundle(ctx, want)
	}
	ns, err := p.nsL.Get(key)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ns.Status.Phase == corev1.NamespaceTerminating || ns.DeletionTimestamp != nil {
		return nil // creating there is forbidden
	}
	var errs []error
	for _, c := range p.cms {
		errs = append(errs, p.syncConfigMap(ctx, key, c.name, c.data(want)))
	}
	return errors.Join(errs...)
}

// syncConfigMap makes ConfigMap ns/name hold exactly data.
func (p *Publisher) syncConfigMap(ctx context.Context, ns, name string, data map[string]string) error {
	cm, err := p.cmL[name].ConfigMaps(ns).Get(name)
	switch {
	case apierrors.IsNotFound(err):
		_, err = p.cfg.Client.CoreV1().ConfigMaps(ns).Create(ctx, p.desiredConfigMap(ns, name, data), metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("k8s: ConfigMap %s/%s: cache behind: %w", ns, name, err)
		}
		return err
	case err != nil:
		return err
	case dataCurrent(cm, data):
		return nil
	}
	upd := cm.DeepCopy()
	upd.Data, upd.BinaryData = data, nil
	upd.Labels = mergeLabel(upd.Labels)
	_, err = p.cfg.Client.CoreV1().ConfigMaps(ns).Update(ctx, upd, metav1.UpdateOptions{})
	return err
}

// configMapCurrent is the pure decision: does cm already publish want
// (and nothing else)?
func configMapCurrent(cm *corev1.ConfigMap, want []byte) bool {
	return dataCurrent(cm, map[string]string{wire.TrustBundleKey: string(want)})
}

// dataCurrent reports whether cm holds exactly data.
func dataCurrent(cm *corev1.ConfigMap, data map[string]string) bool {
	if len(cm.Data) != len(data) || len(cm.BinaryData) != 0 {
		return false
	}
	for k, v := range data {
		if cm.Data[k] != v {
			return false
		}
	}
	return true
}

// desiredData is what every namespace's ConfigMap holds: only the bundle (a
// key left by an older version, such as its static Envoy bootstrap, is
// removed at the next write).
func (p *Publisher) desiredData(pem []byte) map[string]string {
	return map[string]string{wire.TrustBundleKey: string(pem)}
}

// istioRootCertData is what every namespace's istio-ca-root-cert holds.
func istioRootCertData(pem []byte) map[string]string {
	return map[string]string{wire.IstioRootCertKey: string(pem)}
}

func (p *Publisher) desiredConfigMap(ns, name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: mergeLabel(nil),
			Annotations: map[string]string{TrustDomainAnnotation: p.cfg.TrustDomain.Name()}},
		Data: data,
	}
}

func mergeLabel(l map[string]string) map[string]string {
	if l == nil {
		l = map[string]string{}
	}
	l[ManagedByLabel] = ManagedByValue
	return l
}

// clusterTrustBundleServed asks discovery once per term.
func (p *Publisher) clusterTrustBundleServed() bool {
	res, err := p.cfg.Client.Discovery().ServerResourcesForGroupVersion(certificatesv1.SchemeGroupVersion.String())
	if err != nil {
		return false
	}
	for _, r := range res.APIResources {
		if r.Name == "clustertrustbundles" {
			return true
		}
	}
	return false
}

func (p *Publisher) syncClusterTrustBundle(ctx context.Context, want []byte) error {
	api := p.cfg.Client.CertificatesV1().ClusterTrustBundles()
	name := p.ClusterTrustBundleName()
	cur, err := api.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = api.Create(ctx, &certificatesv1.ClusterTrustBundle{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: mergeLabel(nil)},
			Spec:       certificatesv1.ClusterTrustBundleSpec{TrustBundle: string(want)},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil || bytes.Equal([]byte(cur.Spec.TrustBundle), want) {
		return err
	}
	cur.Spec.TrustBundle = string(want)
	_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// Resync enqueues everything (e.g. a periodic safety net); safe while running.
func (p *Publisher) Resync() { p.enqueueAll() }

func metaOf(obj any) (metav1.Object, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("k8s: unexpected object %T", obj)
	}
	return m, nil
}
