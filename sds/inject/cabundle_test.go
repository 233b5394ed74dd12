package inject

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// bundleSource is a changing bundle, like ca.CA's.
type bundleSource struct {
	mu      sync.Mutex
	pem     []byte
	changed chan struct{}
}

func (b *bundleSource) get() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pem
}

func (b *bundleSource) ch() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

func (b *bundleSource) set(pem string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pem = []byte(pem)
	close(b.changed)
	b.changed = make(chan struct{})
}

func mwc() *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultConfigurationName},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.certmesh.io"}, {Name: "b.certmesh.io"}},
	}
}

func caBundles(t *testing.T, client *fake.Clientset) []string {
	t.Helper()
	got, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), DefaultConfigurationName, metav1.GetOptions{})
	require.NoError(t, err)
	var out []string
	for _, w := range got.Webhooks {
		out = append(out, string(w.ClientConfig.CABundle))
	}
	return out
}

func TestBundleReconciler(t *testing.T) {
	client := fake.NewClientset()
	src := &bundleSource{pem: []byte("root-1"), changed: make(chan struct{})}
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	r, err := NewBundleReconciler(BundleConfig{Client: client, Bundle: src.get, Changed: src.ch, Clock: clk})
	require.NoError(t, err)

	wrote, err := r.Reconcile(context.Background())
	require.NoError(t, err)
	require.False(t, wrote, "no configuration yet is fine")

	_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), mwc(), metav1.CreateOptions{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	require.Eventually(t, func() bool { return caBundles(t, client)[1] == "root-1" }, 5*time.Second, 10*time.Millisecond)
	src.set("root-1+root-2") // a rotation
	require.Eventually(t, func() bool {
		b := caBundles(t, client)
		return b[0] == "root-1+root-2" && b[1] == "root-1+root-2"
	}, 5*time.Second, 10*time.Millisecond)

	// Someone re-applies the manifest without caBundle: the next resync repairs it.
	_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(context.Background(), mwc(), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		clk.Step(time.Minute)
		return caBundles(t, client)[0] == "root-1+root-2"
	}, 5*time.Second, 10*time.Millisecond)

	wrote, err = r.Reconcile(context.Background())
	require.NoError(t, err)
	require.False(t, wrote, "nothing to change, nothing written")
}
