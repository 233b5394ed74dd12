package ingress

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

type runtimeObject = runtime.Object

func TestRoute(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	cls := "nginx"
	ing := tlsIngress()
	ing.UID = "u1"
	ing.Spec.IngressClassName = &cls
	r := newRoute(&solverBackend{client: client, podIP: "10.0.0.7", port: 8089}, ing)

	require.NoError(t, r.Route(ctx, "a.example", "tok", "tok.key"))
	require.NoError(t, r.Route(ctx, "a.example", "tok", "tok.key"), "idempotent")
	name := objectName("a.example", "tok")

	got, err := client.NetworkingV1().Ingresses("shop").Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "nginx", *got.Spec.IngressClassName)
	rule := got.Spec.Rules[0]
	require.Equal(t, "a.example", rule.Host)
	require.Equal(t, "/.well-known/acme-challenge/tok", rule.HTTP.Paths[0].Path)
	require.Equal(t, name, rule.HTTP.Paths[0].Backend.Service.Name)
	require.Equal(t, "web", got.OwnerReferences[0].Name)
	_, hasIssuer := IssuerName(got.Annotations)
	require.False(t, hasIssuer, "the challenge Ingress must not ask for a certificate itself")

	svc, err := client.CoreV1().Services("shop").Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Empty(t, svc.Spec.Selector)
	require.Equal(t, int32(8089), svc.Spec.Ports[0].TargetPort.IntVal)
	slice, err := client.DiscoveryV1().EndpointSlices("shop").Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.7"}, slice.Endpoints[0].Addresses)
	require.Equal(t, name, slice.Labels["kubernetes.io/service-name"])

	require.NoError(t, r.Unroute(ctx, "a.example", "tok"))
	require.NoError(t, r.Unroute(ctx, "a.example", "tok"), "gone is fine")
	for _, list := range []func() (int, error){
		func() (int, error) {
			l, err := client.NetworkingV1().Ingresses("shop").List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		func() (int, error) {
			l, err := client.CoreV1().Services("shop").List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		func() (int, error) {
			l, err := client.DiscoveryV1().EndpointSlices("shop").List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
	} {
		n, err := list()
		require.NoError(t, err)
		require.Zero(t, n)
	}
}
