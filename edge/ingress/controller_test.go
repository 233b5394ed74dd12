package ingress

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/certmesh/certmesh/edge"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testNS = "certmesh"

func issuersCM(yaml string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: IssuersConfigMap, Namespace: testNS},
		Data:       map[string]string{IssuersKey: yaml},
	}
}

func annotated(name, issuer string, tls ...networkingv1.IngressTLS) *networkingv1.Ingress {
	ing := tlsIngress(tls...)
	ing.Name, ing.UID = name, "uid-"+"name"
	ing.Annotations = map[string]string{AnnotationCertManagerCluster: issuer}
	return ing
}

// started builds a controller on a fake clientset with its informers synced (no
// Manager loops, so nothing is ordered).
func started(t *testing.T, objs ...runtimeObject) (*Controller, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset(objs...)
	c, err := New(Config{
		Client: client, Namespace: testNS, SolverPodIP: "10.0.0.7",
		Edge: edge.Config{HTTP01Addr: "127.0.0.1:8089"},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	stop, err := c.start(ctx)
	t.Cleanup(func() { stop(); cancel() })
	require.NoError(t, err)
	return c, client
}

// events waits for the Events with reason in namespace shop (the recorder writes
// them asynchronously) and returns them.
func events(t *testing.T, client *fake.Clientset, reason string) []corev1.Event {
	t.Helper()
	return eventsIn(t, client, "shop", reason)
}

func eventsIn(t *testing.T, client *fake.Clientset, ns, reason string) []corev1.Event {
	t.Helper()
	var out []corev1.Event
	require.Eventually(t, func() bool {
		list, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		require.NoError(t, err)
		out = out[:0]
		for _, ev := range list.Items {
			if ev.Reason == reason {
				out = append(out, ev)
			}
		}
		return len(out) > 0
	}, 5*time.Second, 5*time.Millisecond, "no %s Event in %s", reason, ns)
	return out
}

func statusNames(c *Controller) map[string]string {
	out := map[string]string{}
	for _, s := range c.Status() {
		out[s.Name] = s.Ingress
	}
	return out
}

func TestProcessItem(t *testing.T) {
	ctx := context.Background()
	web := annotated("web", "le", networkingv1.IngressTLS{SecretName: "web-tls", Hosts: []string{"web.example"}})
	other := annotated("other", "le", networkingv1.IngressTLS{SecretName: "web-tls", Hosts: []string{"other.example"}})
	plain := tlsIngress(networkingv1.IngressTLS{SecretName: "plain", Hosts: []string{"p.example"}})
	plain.Name = "plain"
	c, client := started(t, issuersCM("le:\n  directory: https://acme.test/dir\n"), web, other, plain)

	require.NoError(t, c.ProcessItem(ctx, IngressKey("shop", "web")))
	require.NoError(t, c.ProcessItem(ctx, IngressKey("shop", "web")), "idempotent")
	require.Equal(t, map[string]string{"shop/web-tls": "shop/web"}, statusNames(c))

	require.NoError(t, c.ProcessItem(ctx, IngressKey("shop", "other")))
	require.Len(t, events(t, client, ReasonConflict), 1, "a second Ingress naming the same Secret is refused")
	require.NoError(t, c.ProcessItem(ctx, IngressKey("shop", "plain")))
	require.Len(t, c.Status(), 1, "an Ingress without an issuer annotation gets nothing")

	// The annotation goes away: the certificate is released.
	web = web.DeepCopy()
	web.Annotations = nil
	_, err := client.NetworkingV1().Ingresses("shop").Update(ctx, web, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		require.NoError(t, c.ProcessItem(ctx, IngressKey("shop", "web")))
		return len(c.Status()) == 0
	}, 5*time.Second, 20*time.Millisecond)

	// Now the other Ingress may take the Secret.
	require.NoError(t, c.ProcessItem(ctx, IngressKey("shop", "other")))
	require.Equal(t, map[string]string{"shop/web-tls": "shop/other"}, statusNames(c))
}

func TestProcessItemUnknownIssuer(t *testing.T) {
	ing := annotated("web", "missing", networkingv1.IngressTLS{SecretName: "s", Hosts: []string{"a.example"}})
	c, client := started(t, issuersCM("le:\n  preset: staging\n"), ing)
	require.NoError(t, c.ProcessItem(context.Background(), IngressKey("shop", "web")))
	require.Empty(t, c.Status())
	evs := events(t, client, ReasonBadIssuer)
	require.Len(t, evs, 1)
	require.Equal(t, corev1.EventTypeWarning, evs[0].Type)
	require.Equal(t, "web", evs[0].InvolvedObject.Name)
}

func TestProcessItemBadIssuersFileRetries(t *testing.T) {
	ing := annotated("web", "le", networkingv1.IngressTLS{SecretName: "s", Hosts: []string{"a.example"}})
	c, client := started(t, issuersCM("le: [not, a, map]\n"), ing)
	require.ErrorIs(t, c.ProcessItem(context.Background(), IngressKey("shop", "web")), ErrInvalidIssuers)
	require.Len(t, events(t, client, ReasonBadIssuer), 1)
}

func TestProcessItemDeletedIngress(t *testing.T) {
	c, _ := started(t, issuersCM(""))
	require.NoError(t, c.ProcessItem(context.Background(), IngressKey("shop", "gone")))
	require.NoError(t, c.ProcessItem(context.Background(), GatewayKey("shop", "gw")), "Gateways are not watched here")
}

func TestNewRefusesForeignEdgeSettings(t *testing.T) {
	_, err := New(Config{Client: fake.NewClientset(), Namespace: testNS, Edge: edge.Config{
		Certificates: []edge.CertificateSpec{{Name: "x"}},
	}})
	require.ErrorIs(t, err, edge.ErrInvalidConfig)
}

func TestStatusOnlyUpdatesAreIgnored(t *testing.T) {
	old := annotated("web", "le")
	old.ResourceVersion, old.Generation = "1", 1
	status := old.DeepCopy()
	status.ResourceVersion = "2"
	status.Status.LoadBalancer.Ingress = []networkingv1.IngressLoadBalancerIngress{{IP: "192.0.2.1"}}
	require.True(t, statusOnly(old, status))
	spec := status.DeepCopy()
	spec.Generation = 2
	require.False(t, statusOnly(old, spec), "a spec change")
	ann := status.DeepCopy()
	ann.Annotations = map[string]string{AnnotationIssuer: "other"}
	require.False(t, statusOnly(old, ann), "an annotation change")
	require.False(t, statusOnly(old, old.DeepCopy()), "a resync")
}

// TestRepeatedProblemIsOneEvent: the recorder's correlator counts a problem seen
// at every resync on one Event instead of writing a new one each time.
func TestRepeatedProblemIsOneEvent(t *testing.T) {
	ing := annotated("web", "missing", networkingv1.IngressTLS{SecretName: "s", Hosts: []string{"a.example"}})
	c, client := started(t, issuersCM("le:\n  preset: staging\n"), ing)
	for range 3 {
		require.NoError(t, c.ProcessItem(context.Background(), IngressKey("shop", "web")))
	}
	require.Eventually(t, func() bool {
		evs := events(t, client, ReasonBadIssuer)
		return len(evs) == 1 && evs[0].Count == 3
	}, 5*time.Second, 5*time.Millisecond)
}
