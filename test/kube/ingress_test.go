package kube_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/edge/ingress"
	"github.com/certmesh/certmesh/edge/pebbletest"
	"github.com/certmesh/certmesh/edge/secretstore"
	"github.com/certmesh/certmesh/test/kube/kubetest"
)

// ingressRig is an Ingress controller running as certmesh-server's ServiceAccount,
// with deploy/kubernetes/rbac.yaml's rights (so the RBAC is tested too), against
// Pebble. There is no ingress controller in the test cluster, so nothing would follow
// the temporary challenge Ingress; Pebble's VA resolves every name to 127.0.0.1
// (challtestsrv) and connects to its HTTP-01 port, which is where the controller's
// solver listens — the path a real ingress would forward; the self-check takes the
// same shortcut. The test checks the temporary Ingress, Service and EndpointSlice
// appear and go away.
type ingressRig struct {
	p      *pebbletest.Pebble
	sysNS  string // certmesh's namespace
	appNS  string
	client kubernetes.Interface // the controller's (ServiceAccount) client
	ctrl   *ingress.Controller
}

// startIngressRig starts the controller; opts adjust its Config (the ServiceAccount
// REST config is passed for clients of other APIs).
func startIngressRig(t testing.TB, opts ...func(*ingress.Config, *rest.Config)) *ingressRig {
	t.Helper()
	p := pebbletest.Start(t, pebbletest.Options{})
	r := &ingressRig{p: p, sysNS: cluster.Namespace(t), appNS: cluster.Namespace(t)}
	cluster.ServiceAccount(t, r.sysNS, "certmesh-server")
	applyRBAC(t, r.sysNS)
	saConfig := cluster.ServiceAccountConfig(t, r.sysNS, "certmesh-server")
	r.client = kubetest.NewClient(t, saConfig)
	issuers := fmt.Sprintf("pebble:\n  directory: %s\n  email: ops@example.com\n  profile: default\n", p.DirectoryURL)
	_, err := cluster.Client.CoreV1().ConfigMaps(r.sysNS).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ingress.IssuersConfigMap, Namespace: r.sysNS},
		Data:       map[string]string{ingress.IssuersKey: issuers},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg := ingress.Config{
		Client: r.client, Namespace: r.sysNS, IngressNamespace: r.appNS, SolverPodIP: "10.1.2.3", ReportingInstance: "test-replica",
		SelfCheck: loopbackClient(t, p.HTTPPort),
		Edge: edge.Config{
			HTTP01Addr: "127.0.0.1:" + strconv.Itoa(p.HTTPPort), HTTPClient: p.HTTPClient(),
			Backoff: edge.Backoff{Min: 200 * time.Millisecond, Max: 2 * time.Second},
		},
	}
	for _, o := range opts {
		o(&cfg, saConfig)
	}
	r.ctrl, err = ingress.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.ctrl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Error("controller did not stop")
		}
	})
	return r
}

// loopbackClient sends every http://host request to 127.0.0.1:port, standing in for
// the cluster ingress the self-check goes through.
func loopbackClient(t testing.TB, port int) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(port))
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// applyRBAC applies deploy/kubernetes/rbac.yaml with certmesh's namespace replaced
// by ns and the cluster-scoped names made unique.
func applyRBAC(t testing.TB, ns string) {
	t.Helper()
	a := newApplier(t, cluster.Config)
	ctx := context.Background()
	for _, obj := range objects(t, filepath.Join(deployDir, "rbac.yaml")) {
		obj = obj.DeepCopy()
		if obj.GetNamespace() != "" {
			obj.SetNamespace(ns)
		} else {
			obj.SetName(obj.GetName() + "-" + ns)
		}
		if obj.GetKind() == "ClusterRoleBinding" {
			require.NoError(t, unstructured.SetNestedField(obj.Object, obj.GetName(), "roleRef", "name"))
		}
		if subjects, ok, _ := unstructured.NestedSlice(obj.Object, "subjects"); ok {
			for _, s := range subjects {
				s.(map[string]any)["namespace"] = ns
			}
			require.NoError(t, unstructured.SetNestedSlice(obj.Object, subjects, "subjects"))
		}
		require.NoError(t, a.apply(ctx, obj))
		if obj.GetNamespace() == "" {
			t.Cleanup(func() { _ = a.delete(context.Background(), obj) })
		}
	}
}

func (r *ingressRig) createIngress(t testing.TB, name, secret string, annotations map[string]string, hosts ...string) {
	t.Helper()
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.appNS, Annotations: annotations},
		Spec: networkingv1.IngressSpec{
			TLS: []networkingv1.IngressTLS{{Hosts: hosts, SecretName: secret}},
			DefaultBackend: &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
				Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80},
			}},
		},
	}
	_, err := cluster.Client.NetworkingV1().Ingresses(r.appNS).Create(context.Background(), ing, metav1.CreateOptions{})
	require.NoError(t, err)
}

// waitSecret waits until the Secret exists and holds a certificate other than not.
func (r *ingressRig) waitSecret(t testing.TB, name string, not []byte) *corev1.Secret {
	t.Helper()
	var got *corev1.Secret
	require.Eventually(t, func() bool {
		s, err := cluster.Client.CoreV1().Secrets(r.appNS).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || len(s.Data[corev1.TLSCertKey]) == 0 || (not != nil && string(s.Data[corev1.TLSCertKey]) == string(not)) {
			return false
		}
		got = s
		return true
	}, 30*time.Second, 10*time.Millisecond, "secret %s/%s; status %+v", r.appNS, name, r.ctrl.Status())
	return got
}

// solverWatch records the temporary challenge Ingresses appearing and going.
type solverWatch struct {
	mu     sync.Mutex
	events []string
	w      watch.Interface
}

func watchSolvers(t testing.TB, ns string) *solverWatch {
	t.Helper()
	w, err := cluster.Client.NetworkingV1().Ingresses(ns).Watch(context.Background(), metav1.ListOptions{LabelSelector: ingress.LabelSolver})
	require.NoError(t, err)
	sw := &solverWatch{w: w}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if ing, ok := ev.Object.(*networkingv1.Ingress); ok {
				sw.mu.Lock()
				sw.events = append(sw.events, string(ev.Type)+" "+ing.Spec.Rules[0].Host)
				sw.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { w.Stop(); <-done })
	return sw
}

func (sw *solverWatch) snapshot() []string {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return slices.Clone(sw.events)
}

func TestIngressCertificateFromPebble(t *testing.T) {
	r := startIngressRig(t)
	ctx := context.Background()
	solvers := watchSolvers(t, r.appNS)

	start := time.Now()
	// cert-manager's annotation, honoured as is.
	r.createIngress(t, "web", "web-tls", map[string]string{ingress.AnnotationCertManagerCluster: "pebble"}, "web.example.test")
	sec := r.waitSecret(t, "web-tls", nil)
	t.Logf("Ingress created → Secret with certificate: %v", time.Since(start))

	require.Equal(t, corev1.SecretTypeTLS, sec.Type)
	require.Equal(t, secretstore.ManagedBy, sec.Labels[secretstore.LabelManagedBy])
	leaf := verifyPebbleChain(t, r.p, sec.Data[corev1.TLSCertKey], "web.example.test")
	require.Equal(t, []string{"web.example.test"}, leaf.DNSNames)
	require.NotEmpty(t, sec.Data[corev1.TLSPrivateKeyKey])
	require.NotEmpty(t, sec.Data["ca.crt"])

	// The temporary route existed during the challenge and is gone now.
	require.Eventually(t, func() bool {
		return slices.Equal(solvers.snapshot(), []string{"ADDED web.example.test", "DELETED web.example.test"})
	}, 10*time.Second, 20*time.Millisecond, "solver ingress events: %v", solvers.snapshot())
	svcs, err := cluster.Client.CoreV1().Services(r.appNS).List(ctx, metav1.ListOptions{LabelSelector: ingress.LabelSolver})
	require.NoError(t, err)
	require.Empty(t, svcs.Items)
	slices_, err := cluster.Client.DiscoveryV1().EndpointSlices(r.appNS).List(ctx, metav1.ListOptions{LabelSelector: ingress.LabelSolver})
	require.NoError(t, err)
	require.Empty(t, slices_.Items)

	// The ACME account key lives in a Secret in certmesh's namespace.
	acct, err := cluster.Client.CoreV1().Secrets(r.sysNS).Get(ctx, "certmesh-acme-account-pebble", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, acct.Data[secretstore.KeyAccountKey])

	requireEvent(t, r.appNS, "web", ingress.ReasonIssued)
	st := r.ctrl.Status()
	require.Len(t, st, 1)
	require.Equal(t, r.appNS+"/web", st[0].Ingress)
	require.Equal(t, r.appNS+"/web-tls", st[0].Secret)
	require.False(t, st[0].NotAfter.IsZero())
	require.False(t, st[0].NextRenewal.IsZero())

	// Deleting the Secret brings it back: the same certificate, no new order.
	require.NoError(t, cluster.Client.CoreV1().Secrets(r.appNS).Delete(ctx, "web-tls", metav1.DeleteOptions{}))
	deleted := time.Now()
	back := r.waitSecret(t, "web-tls", nil)
	t.Logf("Secret deleted → restored: %v", time.Since(deleted))
	require.Equal(t, string(sec.Data[corev1.TLSCertKey]), string(back.Data[corev1.TLSCertKey]))
	require.Equal(t, 1, r.ctrl.Status()[0].Orders)
	requireEvent(t, r.appNS, "web", ingress.ReasonRestored)

	// A host added to the Ingress gets a new certificate for both names.
	ing, err := cluster.Client.NetworkingV1().Ingresses(r.appNS).Get(ctx, "web", metav1.GetOptions{})
	require.NoError(t, err)
	ing.Spec.TLS[0].Hosts = append(ing.Spec.TLS[0].Hosts, "www.example.test")
	_, err = cluster.Client.NetworkingV1().Ingresses(r.appNS).Update(ctx, ing, metav1.UpdateOptions{})
	require.NoError(t, err)
	renewed := r.waitSecret(t, "web-tls", back.Data[corev1.TLSCertKey])
	leaf = verifyPebbleChain(t, r.p, renewed.Data[corev1.TLSCertKey], "www.example.test")
	require.ElementsMatch(t, []string{"web.example.test", "www.example.test"}, leaf.DNSNames)
}

func TestIngressWithoutAnnotationOrUnknownIssuer(t *testing.T) {
	r := startIngressRig(t)
	r.createIngress(t, "plain", "plain-tls", nil, "plain.example.test")
	r.createIngress(t, "typo", "typo-tls", map[string]string{ingress.AnnotationIssuer: "nope"}, "typo.example.test")
	requireEvent(t, r.appNS, "typo", ingress.ReasonBadIssuer)
	_, err := cluster.Client.CoreV1().Secrets(r.appNS).Get(context.Background(), "plain-tls", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "an Ingress without the annotation gets no Secret")
	require.Empty(t, r.ctrl.Status())
}

// TestIngressIssuanceFailedEvent: an order that fails (an issuer whose ACME
// directory does not answer) is an IssuanceFailed Event on the Ingress, naming
// the error and the retry.
func TestIngressIssuanceFailedEvent(t *testing.T) {
	r := startIngressRig(t)
	ctx := context.Background()
	cm, err := cluster.Client.CoreV1().ConfigMaps(r.sysNS).Get(ctx, ingress.IssuersConfigMap, metav1.GetOptions{})
	require.NoError(t, err)
	cm.Data[ingress.IssuersKey] += "down:\n  directory: https://127.0.0.1:1/dir\n  email: ops@example.com\n"
	_, err = cluster.Client.CoreV1().ConfigMaps(r.sysNS).Update(ctx, cm, metav1.UpdateOptions{})
	require.NoError(t, err)
	r.createIngress(t, "down", "down-tls", map[string]string{ingress.AnnotationIssuer: "down"}, "down.example.test")
	ev := requireEventOn(t, "Ingress", r.appNS, "down", ingress.ReasonFailed)
	require.Equal(t, corev1.EventTypeWarning, ev.Type)
	require.Contains(t, ev.Message, "retrying at")
}

func requireEvent(t testing.TB, ns, ingressName, reason string) {
	t.Helper()
	requireEventOn(t, "Ingress", ns, ingressName, reason)
}

// requireEventOn waits for an Event with reason on the object kind ns/name and
// returns it.
func requireEventOn(t testing.TB, kind, ns, name, reason string) corev1.Event {
	t.Helper()
	var got corev1.Event
	require.Eventually(t, func() bool {
		evs, err := cluster.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		i := slices.IndexFunc(evs.Items, func(ev corev1.Event) bool {
			return ev.InvolvedObject.Kind == kind && ev.InvolvedObject.Name == name && ev.Reason == reason
		})
		if i >= 0 {
			got = evs.Items[i]
		}
		return i >= 0
	}, 15*time.Second, 20*time.Millisecond, "no %s event on %s %s/%s", reason, kind, ns, name)
	return got
}

// verifyPebbleChain checks tls.crt against Pebble's root and returns the leaf.
func verifyPebbleChain(t testing.TB, p *pebbletest.Pebble, chainPEM []byte, dnsName string) *x509.Certificate {
	t.Helper()
	return pebbletest.VerifyChain(t, p.Root(t), chainPEM, dnsName)
}

// BenchmarkIngressToSecret measures the time from creating an annotated Ingress to
// its Secret holding a certificate (HTTP-01 against Pebble, through the apiserver).
func BenchmarkIngressToSecret(b *testing.B) {
	r := startIngressRig(b)
	var samples []time.Duration
	i := 0
	for b.Loop() {
		i++
		name := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		r.createIngress(b, name, name+"-tls", map[string]string{ingress.AnnotationIssuer: "pebble"}, name+".example.test")
		r.waitSecret(b, name+"-tls", nil)
		samples = append(samples, time.Since(start))
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "ms/to-secret-median")
}
