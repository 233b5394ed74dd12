package kube_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca"
	caservice "github.com/certmesh/certmesh/ca/service"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/sds/inject"
)

// webhookRig is certmesh's webhook served on loopback with a certificate from a
// certmesh CA, and a MutatingWebhookConfiguration whose clientConfig.url points at
// it, limited to the test's namespaces so other tests sharing the cluster are not
// affected. calls counts the AdmissionReviews the apiserver sent.
type webhookRig struct {
	name  string
	url   string
	calls atomic.Int64
}

func startWebhook(t *testing.T, namespaces ...string) *webhookRig {
	t.Helper()
	authority, err := ca.New(ca.Config{Dir: t.TempDir(), TrustDomain: td})
	require.NoError(t, err)
	nsLabels := func(ctx context.Context, ns string) (map[string]string, error) {
		got, err := cluster.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return got.Labels, nil
	}
	h, err := inject.NewHandler(inject.Config{
		TrustDomain: td, ServerAddr: "certmesh.certmesh.svc:8443",
		AgentImage: "ghcr.io/certmesh/certmesh:test", EnvoyImage: "envoyproxy/envoy:v1.36.2",
	}, nsLabels, nil)
	require.NoError(t, err)
	r := &webhookRig{name: "certmesh-test-" + namespaces[0]}
	counted := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.calls.Add(1)
		h.ServeHTTP(w, req)
	})
	cert := &caservice.ServingCert{CA: authority, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Clock: clock.RealClock{}}
	srv, err := inject.NewServer(inject.ServerConfig{Addr: "127.0.0.1:0", Handler: counted, GetCertificate: cert.GetCertificate})
	require.NoError(t, err)
	addr, err := srv.Listen()
	require.NoError(t, err)
	r.url = "https://" + addr.String() + inject.Path
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	r.createConfiguration(t, namespaces)
	// caBundle starts empty, as in deploy/: the reconciler fills it with the CA's
	// bundle, and only then can the apiserver trust the webhook.
	rec, err := inject.NewBundleReconciler(inject.BundleConfig{
		Client: cluster.Client, Name: r.name, Bundle: authority.BundlePEM, Changed: authority.BundleChanged,
	})
	require.NoError(t, err)
	wrote, err := rec.Reconcile(context.Background())
	require.NoError(t, err)
	require.True(t, wrote)
	return r
}

func (r *webhookRig) createConfiguration(t *testing.T, namespaces []string) {
	t.Helper()
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	timeout := int32(5)
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: r.name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.certmesh.io",
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			TimeoutSeconds:          &timeout,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &r.url},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: namespaces,
			}}},
		}},
	}
	ctx := context.Background()
	api := cluster.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	_, err := api.Create(ctx, mwc, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = api.Delete(context.Background(), r.name, metav1.DeleteOptions{}) })
}

func labelNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	got, err := cluster.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	require.NoError(t, err)
	got.Labels[inject.LabelInject] = inject.InjectEnabled
	_, err = cluster.Client.CoreV1().Namespaces().Update(ctx, got, metav1.UpdateOptions{})
	require.NoError(t, err)
}

func createPod(t *testing.T, ns, name string, labels map[string]string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "nginx:1.27", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		},
	}
	got, err := cluster.Client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	require.NoError(t, err)
	return got
}

func names(cs []corev1.Container) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestWebhookInjectsOptedInPods(t *testing.T) {
	meshed, plain := cluster.Namespace(t), cluster.Namespace(t)
	labelNamespace(t, meshed)
	r := startWebhook(t, meshed, plain)

	// The apiserver picks the new configuration up asynchronously: create probe pods
	// until it calls.
	probes := 0
	require.Eventually(t, func() bool {
		probes++
		createPod(t, meshed, fmt.Sprintf("probe-%d", probes), nil)
		return r.calls.Load() > 0
	}, 20*time.Second, 200*time.Millisecond, "the apiserver never called the webhook")

	start := time.Now()
	pod := createPod(t, meshed, "web", nil)
	t.Logf("pod create through the webhook: %v (after %d probe pods)", time.Since(start), probes)
	stored, err := cluster.Client.CoreV1().Pods(meshed).Get(context.Background(), pod.Name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{inject.AgentContainer, inject.EnvoyContainer}, names(stored.Spec.InitContainers))
	require.Equal(t, []string{"app"}, names(stored.Spec.Containers))
	agent := stored.Spec.InitContainers[0]
	require.Equal(t, corev1.ContainerRestartPolicyAlways, *agent.RestartPolicy, "native sidecar")
	require.Contains(t, agent.Args, "--token-file")
	require.Equal(t, "true", stored.Annotations[inject.AnnotationInjected])
	vols := map[string]corev1.Volume{}
	for _, v := range stored.Spec.Volumes {
		vols[v.Name] = v
	}
	require.Equal(t, corev1.StorageMediumMemory, vols[inject.SocketVolume].EmptyDir.Medium)
	require.Equal(t, "spiffe://example.org", vols[inject.TokenVolume].Projected.Sources[0].ServiceAccountToken.Audience)
	require.Equal(t, wire.TrustBundleConfigMap, vols[inject.BundleVolume].ConfigMap.Name)
	// The apiserver stored the pod's own rendered bootstrap, and it still loads.
	envoy := stored.Spec.InitContainers[1]
	require.Equal(t, "--config-yaml", envoy.Args[0])
	boot := new(bootstrapv3.Bootstrap)
	require.NoError(t, protojson.Unmarshal([]byte(envoy.Args[1]), boot))
	require.NoError(t, inject.ValidateBootstrap(boot))
	require.Contains(t, envoy.Args[1], `"prefix":"spiffe://example.org/"`, "peers default to the server's trust domain")

	// A pod in a namespace that did not opt in: the webhook is called and leaves it alone.
	before := r.calls.Load()
	spec := createPod(t, plain, "plain", nil)
	require.Greater(t, r.calls.Load(), before, "the webhook must have been asked")
	stored, err = cluster.Client.CoreV1().Pods(plain).Get(context.Background(), spec.Name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Empty(t, stored.Spec.InitContainers)
	require.NotContains(t, stored.Annotations, inject.AnnotationInjected)

	// The same namespace, but the pod opts in by its label.
	stored = createPod(t, plain, "opted", map[string]string{inject.LabelInject: inject.InjectEnabled})
	require.Equal(t, []string{inject.AgentContainer, inject.EnvoyContainer}, names(stored.Spec.InitContainers))

	// A pod in the meshed namespace that opts out.
	stored = createPod(t, meshed, "optout", map[string]string{inject.LabelInject: inject.InjectDisabled})
	require.Empty(t, stored.Spec.InitContainers)
}
