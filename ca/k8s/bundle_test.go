package k8s

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/certmesh/certmesh/ca/wire"
)

// fakeBundle is a BundleSource whose bundle the test changes.
type fakeBundle struct {
	mu      sync.Mutex
	pem     []byte
	changed chan struct{}
}

func newFakeBundle(pem string) *fakeBundle {
	return &fakeBundle{pem: []byte(pem), changed: make(chan struct{})}
}

func (b *fakeBundle) BundlePEM() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pem
}

func (b *fakeBundle) BundleChanged() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

func (b *fakeBundle) set(pem string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pem = []byte(pem)
	close(b.changed)
	b.changed = make(chan struct{})
}

var _ BundleSource = (*fakeBundle)(nil)

// runPublisher runs a publisher over cs until the test ends.
func runPublisher(t *testing.T, cs *fake.Clientset, cfg PublisherConfig) {
	t.Helper()
	cfg.Client, cfg.TrustDomain = cs, spiffeid.RequireTrustDomainFromString("example.org")
	p, err := NewPublisher(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
}

// requireConfigMapData polls ns/name until it holds exactly want.
func requireConfigMapData(t *testing.T, cs *fake.Clientset, ns, name string, want map[string]string) {
	t.Helper()
	var last map[string]string
	require.Eventually(t, func() bool {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		last = cm.Data
		return dataCurrent(cm, want) && cm.Labels[ManagedByLabel] == ManagedByValue
	}, 10*time.Second, 10*time.Millisecond, "ConfigMap %s/%s holds %v, want %v", ns, name, last, want)
}

func TestPublisherIstioRootCert(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}})
	bundle := newFakeBundle("ROOT-1")
	runPublisher(t, cs, PublisherConfig{Bundle: bundle, IstioRootCert: true})

	own := map[string]string{wire.TrustBundleKey: "ROOT-1"}
	istio := map[string]string{wire.IstioRootCertKey: "ROOT-1"}
	requireConfigMapData(t, cs, "app", wire.TrustBundleConfigMap, own)
	requireConfigMapData(t, cs, "app", wire.IstioRootCertConfigMap, istio)

	// A new namespace gets both.
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "late"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	requireConfigMapData(t, cs, "late", wire.IstioRootCertConfigMap, istio)

	// Deleted: recreated. Edited (a stray binary key too): rewritten.
	require.NoError(t, cs.CoreV1().ConfigMaps("app").Delete(ctx, wire.IstioRootCertConfigMap, metav1.DeleteOptions{}))
	requireConfigMapData(t, cs, "app", wire.IstioRootCertConfigMap, istio)
	cm, err := cs.CoreV1().ConfigMaps("late").Get(ctx, wire.IstioRootCertConfigMap, metav1.GetOptions{})
	require.NoError(t, err)
	cm.Data[wire.IstioRootCertKey], cm.BinaryData = "EVIL", map[string][]byte{"x": {1}}
	_, err = cs.CoreV1().ConfigMaps("late").Update(ctx, cm, metav1.UpdateOptions{})
	require.NoError(t, err)
	requireConfigMapData(t, cs, "late", wire.IstioRootCertConfigMap, istio)

	// A rotation reaches both ConfigMaps in every namespace.
	bundle.set("ROOT-1\nROOT-2")
	for _, ns := range []string{"app", "late"} {
		requireConfigMapData(t, cs, ns, wire.IstioRootCertConfigMap, map[string]string{wire.IstioRootCertKey: "ROOT-1\nROOT-2"})
		requireConfigMapData(t, cs, ns, wire.TrustBundleConfigMap, map[string]string{wire.TrustBundleKey: "ROOT-1\nROOT-2"})
	}
}

func TestPublisherWithoutIstioRootCert(t *testing.T) {
	cs := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}})
	runPublisher(t, cs, PublisherConfig{Bundle: newFakeBundle("ROOT-1")})
	requireConfigMapData(t, cs, "app", wire.TrustBundleConfigMap, map[string]string{wire.TrustBundleKey: "ROOT-1"})
	cms, err := cs.CoreV1().ConfigMaps("app").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, cms.Items, 1, "only certmesh-trust-bundle is published by default")
}
