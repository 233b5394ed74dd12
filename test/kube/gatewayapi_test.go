package kube_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/certmesh/certmesh/edge/ingress"
)

// gatewayAPICRDs are the standard-channel CRDs the test installs, from the
// sigs.k8s.io/gateway-api module go.mod pins (the version the controller's client is).
var gatewayAPICRDs = []string{
	"gateway.networking.k8s.io_gateways.yaml", "gateway.networking.k8s.io_listenersets.yaml", "gateway.networking.k8s.io_httproutes.yaml",
}

// installGatewayAPI applies the Gateway API CRDs and removes them when the test ends.
func installGatewayAPI(t testing.TB) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	require.NoError(t, err, "locate the gateway-api module")
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
	a := newApplier(t, cluster.Config)
	var crds []*unstructured.Unstructured
	for _, file := range gatewayAPICRDs {
		crds = append(crds, objects(t, filepath.Join(dir, file))...)
	}
	t.Cleanup(func() {
		for _, crd := range crds {
			require.NoError(t, a.delete(context.Background(), crd))
		}
	})
	for _, crd := range crds {
		require.NoError(t, a.apply(context.Background(), crd), crd.GetName())
	}
}

// gatewaysServed asks discovery whether Gateways are served.
func gatewaysServed(t *testing.T) bool {
	dc, err := discovery.NewDiscoveryClientForConfig(cluster.Config)
	require.NoError(t, err)
	list, err := dc.ServerResourcesForGroupVersion("gateway.networking.k8s.io/v1")
	return err == nil && slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == "gateways" })
}

// routeWatch records the temporary challenge HTTPRoutes appearing and going.
type routeWatch struct {
	mu     sync.Mutex
	events []string
	routes []*gatewayv1.HTTPRoute
}

func watchRoutes(t testing.TB, gws gatewayclient.Interface, ns string) *routeWatch {
	t.Helper()
	rw := &routeWatch{}
	var watcher watch.Interface
	var err error
	require.Eventually(t, func() bool { // the CRD takes a moment to be established
		watcher, err = gws.GatewayV1().HTTPRoutes(ns).Watch(context.Background(), metav1.ListOptions{LabelSelector: ingress.LabelSolver})
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "watch HTTPRoutes: %v", err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range watcher.ResultChan() {
			if hr, ok := ev.Object.(*gatewayv1.HTTPRoute); ok {
				rw.mu.Lock()
				rw.events = append(rw.events, string(ev.Type)+" "+string(hr.Spec.Hostnames[0]))
				rw.routes = append(rw.routes, hr)
				rw.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { watcher.Stop(); <-done })
	return rw
}

func (rw *routeWatch) snapshot() ([]string, []*gatewayv1.HTTPRoute) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return slices.Clone(rw.events), slices.Clone(rw.routes)
}

// TestGatewayListenerCertificateFromPebble starts the controller before the Gateway
// API exists, installs its CRDs, and checks that an annotated Gateway's HTTPS
// listener gets a certificate from Pebble in the Secret it names: the challenge is
// routed by a temporary HTTPRoute attached to the Gateway (gone afterwards), a
// listener certmesh cannot serve gets an Event, a ListenerSet attached to the Gateway
// gets its listener's certificate once the Gateway admits it (and only an Event
// before), and a deleted Secret comes back without a new order. All of it as certmesh-server's ServiceAccount, with
// deploy/kubernetes/rbac.yaml's rights.
func TestGatewayListenerCertificateFromPebble(t *testing.T) {
	require.Eventually(t, func() bool { return !gatewaysServed(t) }, time.Minute, 100*time.Millisecond,
		"the Gateway API is still served from an earlier run")
	r, admin := startGatewayRig(t)
	ctx := context.Background()
	routes := watchRoutes(t, admin, r.appNS)
	host := "shop.gateway.example.test"
	gw := shopGateway(r.appNS, "edge", host, "shop-tls", gatewayv1.Listener{
		Name: "any-host", Port: 8443, Protocol: gatewayv1.HTTPSProtocolType,
		TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "any-tls"}}},
	})
	start := time.Now()
	createGateway(t, admin, gw)

	sec := r.waitSecret(t, "shop-tls", nil)
	t.Logf("Gateway created (CRDs installed after the controller started) → Secret with certificate: %v", time.Since(start))
	require.Equal(t, corev1.SecretTypeTLS, sec.Type)
	leaf := verifyPebbleChain(t, r.p, sec.Data[corev1.TLSCertKey], host)
	require.Equal(t, []string{host}, leaf.DNSNames)

	// The challenge went through an HTTPRoute on the Gateway, removed afterwards.
	require.Eventually(t, func() bool {
		events, _ := routes.snapshot()
		return slices.Equal(events, []string{"ADDED " + host, "DELETED " + host})
	}, 10*time.Second, 20*time.Millisecond, "solver HTTPRoute events")
	_, seen := routes.snapshot()
	hr := seen[0]
	require.Equal(t, gatewayv1.ObjectName("edge"), hr.Spec.ParentRefs[0].Name)
	require.Equal(t, "/.well-known/acme-challenge/", (*hr.Spec.Rules[0].Matches[0].Path.Value)[:len("/.well-known/acme-challenge/")])
	require.Equal(t, "Gateway", hr.OwnerReferences[0].Kind)
	svcs, err := cluster.Client.CoreV1().Services(r.appNS).List(ctx, metav1.ListOptions{LabelSelector: ingress.LabelSolver})
	require.NoError(t, err)
	require.Empty(t, svcs.Items)

	issued := requireEventOn(t, "Gateway", r.appNS, "edge", ingress.ReasonIssued)
	require.Equal(t, "gateway.networking.k8s.io/v1", issued.InvolvedObject.APIVersion)
	bad := requireEventOn(t, "Gateway", r.appNS, "edge", ingress.ReasonBadSpec)
	require.Contains(t, bad.Message, `listener "any-host" has no hostname`)
	// Seen again (an annotation changed), the same problem is counted on the same
	// Event (the recorder patches it: RBAC events patch) rather than written anew.
	cur, err := admin.GatewayV1().Gateways(r.appNS).Get(ctx, "edge", metav1.GetOptions{})
	require.NoError(t, err)
	cur.Annotations["example.com/touched"] = "1"
	_, err = admin.GatewayV1().Gateways(r.appNS).Update(ctx, cur, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		evs, err := cluster.Client.CoreV1().Events(r.appNS).List(ctx, metav1.ListOptions{FieldSelector: "reason=" + ingress.ReasonBadSpec})
		return err == nil && len(evs.Items) == 1 && evs.Items[0].Count == 2
	}, 15*time.Second, 20*time.Millisecond, "the repeated BadTLSEntry is one Event with count 2")
	st := r.ctrl.Status()
	require.Len(t, st, 1, "only the listener with a hostname gets a certificate")
	require.Equal(t, r.appNS+"/edge", st[0].Gateway)
	require.Equal(t, r.appNS+"/shop-tls", st[0].Secret)

	// A ListenerSet attached to the Gateway gets its own listener's certificate once
	// the Gateway admits it; the challenge arrives through the Gateway's plain-HTTP
	// listener.
	teamHost := gatewayv1.Hostname("team.gateway.example.test")
	ls := &gatewayv1.ListenerSet{
		ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: r.appNS, Annotations: map[string]string{ingress.AnnotationIssuer: "pebble"}},
		Spec: gatewayv1.ListenerSetSpec{ParentRef: gatewayv1.ParentGatewayReference{Name: "edge"}, Listeners: []gatewayv1.ListenerEntry{{
			Name: "team", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, Hostname: &teamHost,
			TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "team-tls"}}},
		}}},
	}
	require.Eventually(t, func() bool {
		_, err = admin.GatewayV1().ListenerSets(r.appNS).Create(ctx, ls, metav1.CreateOptions{})
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "create ListenerSet: %v", err)
	// The Gateway does not admit ListenerSets yet (allowedListeners unset admits
	// none): no order, only the reason. Admitting them re-enqueues the ListenerSet.
	refused := requireEventOn(t, "ListenerSet", r.appNS, "team", ingress.ReasonBadSpec)
	require.Contains(t, refused.Message, "does not admit it: spec.allowedListeners is unset")
	require.Len(t, r.ctrl.Status(), 1, "a ListenerSet the Gateway does not admit gets no certificate")
	require.Eventually(t, func() bool {
		cur, err := admin.GatewayV1().Gateways(r.appNS).Get(ctx, "edge", metav1.GetOptions{})
		if err != nil {
			return false
		}
		same := gatewayv1.NamespacesFromSame
		cur.Spec.AllowedListeners = &gatewayv1.AllowedListeners{Namespaces: &gatewayv1.ListenerNamespaces{From: &same}}
		_, err = admin.GatewayV1().Gateways(r.appNS).Update(ctx, cur, metav1.UpdateOptions{})
		return err == nil
	}, 10*time.Second, 100*time.Millisecond, "admit ListenerSets from the Gateway's namespace")
	teamSec := r.waitSecret(t, "team-tls", nil)
	leaf = verifyPebbleChain(t, r.p, teamSec.Data[corev1.TLSCertKey], string(teamHost))
	require.Equal(t, []string{string(teamHost)}, leaf.DNSNames)
	requireEventOn(t, "ListenerSet", r.appNS, "team", ingress.ReasonIssued)
	require.Eventually(t, func() bool {
		events, _ := routes.snapshot()
		return len(events) == 4 && events[3] == "DELETED "+string(teamHost)
	}, 10*time.Second, 20*time.Millisecond, "solver HTTPRoute events")
	_, seen = routes.snapshot()
	require.Len(t, seen[2].Spec.ParentRefs, 2, "the ListenerSet and its Gateway")
	require.Equal(t, gatewayv1.Kind("ListenerSet"), *seen[2].Spec.ParentRefs[0].Kind)
	require.Equal(t, gatewayv1.ObjectName("edge"), seen[2].Spec.ParentRefs[1].Name)
	require.NoError(t, admin.GatewayV1().ListenerSets(r.appNS).Delete(ctx, "team", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return len(r.ctrl.Status()) == 1 }, 15*time.Second, 20*time.Millisecond,
		"the ListenerSet's certificate is released with it")

	// Deleting the Secret brings it back: the same certificate, no new order.
	require.NoError(t, cluster.Client.CoreV1().Secrets(r.appNS).Delete(ctx, "shop-tls", metav1.DeleteOptions{}))
	back := r.waitSecret(t, "shop-tls", nil)
	require.Equal(t, string(sec.Data[corev1.TLSCertKey]), string(back.Data[corev1.TLSCertKey]))
	require.Equal(t, 1, r.ctrl.Status()[0].Orders)

	// Removing the annotation releases the certificate (the Secret stays, as with
	// cert-manager: it may still be served).
	cur, err = admin.GatewayV1().Gateways(r.appNS).Get(ctx, "edge", metav1.GetOptions{})
	require.NoError(t, err)
	cur.Annotations = nil
	_, err = admin.GatewayV1().Gateways(r.appNS).Update(ctx, cur, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(r.ctrl.Status()) == 0 }, 15*time.Second, 20*time.Millisecond)
	_, err = cluster.Client.CoreV1().Secrets(r.appNS).Get(ctx, "shop-tls", metav1.GetOptions{})
	require.NoError(t, err)
}

// gatewayRig is an ingressRig watching Gateways, with the Gateway API installed.
func startGatewayRig(t testing.TB) (*ingressRig, gatewayclient.Interface) {
	t.Helper()
	r := startIngressRig(t, func(cfg *ingress.Config, sa *rest.Config) {
		gws, err := gatewayclient.NewForConfig(sa)
		require.NoError(t, err)
		cfg.Gateways, cfg.GatewayAPIPoll = gws, 200*time.Millisecond
	})
	installGatewayAPI(t)
	admin, err := gatewayclient.NewForConfig(cluster.Config)
	require.NoError(t, err)
	return r, admin
}

// shopGateway is an annotated Gateway with a plain-HTTP listener and one HTTPS
// listener for host serving Secret secret, plus extra listeners.
func shopGateway(ns, name, host, secret string, extra ...gatewayv1.Listener) *gatewayv1.Gateway {
	hostname := gatewayv1.Hostname(host)
	return &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{ingress.AnnotationCertManagerCluster: "pebble"}},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "envoy", Listeners: append([]gatewayv1.Listener{
			{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType},
			{Name: "https", Port: 443, Protocol: gatewayv1.HTTPSProtocolType, Hostname: &hostname,
				TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: gatewayv1.ObjectName(secret)}}}},
		}, extra...)},
	}
}

// createGateway creates gw, retrying while the CRD is being established.
func createGateway(t testing.TB, admin gatewayclient.Interface, gw *gatewayv1.Gateway) {
	t.Helper()
	var err error
	require.Eventually(t, func() bool {
		_, err = admin.GatewayV1().Gateways(gw.Namespace).Create(context.Background(), gw, metav1.CreateOptions{})
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "create Gateway: %v", err)
}

// BenchmarkGatewayToSecret measures the time from creating an annotated Gateway to
// its listener's Secret holding a certificate (HTTP-01 through a temporary HTTPRoute,
// against Pebble, through the apiserver); the Ingress figure is
// BenchmarkIngressToSecret.
func BenchmarkGatewayToSecret(b *testing.B) {
	r, admin := startGatewayRig(b)
	var samples []time.Duration
	i := 0
	for b.Loop() {
		i++
		name := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		createGateway(b, admin, shopGateway(r.appNS, name, name+".example.test", name+"-tls"))
		r.waitSecret(b, name+"-tls", nil)
		samples = append(samples, time.Since(start))
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "ms/to-secret-median")
}
