package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/certmesh/certmesh/edge"
)

// LabelSolver marks the temporary objects that route an HTTP-01 challenge.
const LabelSolver = "certmesh.io/acme-http01-solver"

// solverBackend is where challenge requests must end up: this replica's pod and the
// port its HTTP-01 responder listens on. Only the leader orders, so only its
// responder knows the tokens; the Service therefore has no selector and one
// EndpointSlice naming exactly this pod.
type solverBackend struct {
	client   kubernetes.Interface
	gateways gatewayclient.Interface // HTTPRoutes; nil without the Gateway API
	podIP    string
	port     int32
	check    *selfCheck // nil: no self-check
}

// route is the edge.HTTP01Router of one Ingress or Gateway: while a challenge is
// pending it adds, in the object's namespace, a Service + EndpointSlice pointing at
// the responder and a rule routing the exact challenge path of the host there, as
// cert-manager's solver does: for an Ingress, an Ingress of the same class; for a
// Gateway, an HTTPRoute attached to it. All three are deleted afterwards; an owner
// reference to the object lets the garbage collector remove leftovers after a crash.
// It is a comparable value so that edge.Manager.Ensure sees an unchanged spec as
// unchanged.
type route struct {
	backend    *solverBackend
	kind       Kind
	namespace  string
	owner      string
	ownerUID   types.UID
	className  string // Ingress only: the class the challenge Ingress copies
	classAnnot string
	// ListenerSet only: its parent Gateway, which the HTTPRoute attaches to as
	// well (the plain-HTTP listener may be the Gateway's).
	parentNamespace string
	parentName      string
}

var _ edge.HTTP01Router = route{}

func newRoute(b *solverBackend, ing *networkingv1.Ingress) route {
	cls, annot := ingressClass(ing)
	return route{
		backend: b, kind: KindIngress, namespace: ing.Namespace, owner: ing.Name, ownerUID: ing.UID,
		className: cls, classAnnot: annot,
	}
}

func newGatewayRoute(b *solverBackend, gw *gatewayv1.Gateway) route {
	return route{backend: b, kind: KindGateway, namespace: gw.Namespace, owner: gw.Name, ownerUID: gw.UID}
}

func newListenerSetRoute(b *solverBackend, ls *gatewayv1.ListenerSet, parentNamespace, parentName string) route {
	return route{
		backend: b, kind: KindListenerSet, namespace: ls.Namespace, owner: ls.Name, ownerUID: ls.UID,
		parentNamespace: parentNamespace, parentName: parentName,
	}
}

// objectName is the name of the three objects of one challenge.
func objectName(domain, token string) string {
	sum := sha256.Sum256([]byte(domain + "\n" + token))
	return "certmesh-acme-" + hex.EncodeToString(sum[:6])
}

// Route implements edge.HTTP01Router: it creates the route and, with a self-check
// configured, waits until the route answers.
func (r route) Route(ctx context.Context, domain, token, keyAuth string) error {
	name := objectName(domain, token)
	meta := r.meta(name)
	if err := r.createService(ctx, meta); err != nil {
		return err
	}
	if err := r.createEndpoints(ctx, meta); err != nil {
		return err
	}
	if err := r.createRule(ctx, meta, domain, token); err != nil {
		return err
	}
	if r.backend.check == nil {
		return nil
	}
	return r.backend.check.wait(ctx, domain, token, keyAuth)
}

// Unroute implements edge.HTTP01Router; objects already gone are fine.
func (r route) Unroute(ctx context.Context, domain, token string) error {
	name := objectName(domain, token)
	c := r.backend.client
	var rule error
	if r.kind == KindGateway || r.kind == KindListenerSet {
		rule = r.deleteHTTPRoute(ctx, name)
	} else {
		rule = ignoreNotFound(c.NetworkingV1().Ingresses(r.namespace).Delete(ctx, name, metav1.DeleteOptions{}))
	}
	return errors.Join(rule,
		ignoreNotFound(c.DiscoveryV1().EndpointSlices(r.namespace).Delete(ctx, name, metav1.DeleteOptions{})),
		ignoreNotFound(c.CoreV1().Services(r.namespace).Delete(ctx, name, metav1.DeleteOptions{})),
	)
}

func (r route) meta(name string) metav1.ObjectMeta {
	controller := false
	return metav1.ObjectMeta{
		Name: name, Namespace: r.namespace,
		Labels: map[string]string{LabelSolver: "true", "app.kubernetes.io/managed-by": "certmesh"},
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: r.kind.apiVersion(), Kind: string(r.kind), Name: r.owner, UID: r.ownerUID,
			Controller: &controller,
		}},
	}
}

func (r route) createService(ctx context.Context, meta metav1.ObjectMeta) error {
	svc := &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
		Type:  corev1.ServiceTypeClusterIP,
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(r.backend.port)}},
	}}
	_, err := r.backend.client.CoreV1().Services(r.namespace).Create(ctx, svc, metav1.CreateOptions{})
	return ignoreExists(err, "service", meta.Name)
}

func (r route) createEndpoints(ctx context.Context, meta metav1.ObjectMeta) error {
	meta.Labels = map[string]string{
		LabelSolver: "true", discoveryv1.LabelServiceName: meta.Name,
		discoveryv1.LabelManagedBy: "certmesh.io",
	}
	ready := true
	port, proto, portName := r.backend.port, corev1.ProtocolTCP, "http"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: meta, AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses: []string{r.backend.podIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
	_, err := r.backend.client.DiscoveryV1().EndpointSlices(r.namespace).Create(ctx, slice, metav1.CreateOptions{})
	return ignoreExists(err, "endpointslice", meta.Name)
}

// createRule routes the challenge path to the Service through the owner's data plane.
func (r route) createRule(ctx context.Context, meta metav1.ObjectMeta, domain, token string) error {
	if r.kind == KindGateway || r.kind == KindListenerSet {
		return r.createHTTPRoute(ctx, meta, domain, token)
	}
	return r.createIngress(ctx, meta, domain, token)
}

func (r route) createIngress(ctx context.Context, meta metav1.ObjectMeta, domain, token string) error {
	if r.classAnnot != "" {
		meta.Annotations = map[string]string{annotationIngressClass: r.classAnnot}
	}
	exact := networkingv1.PathTypeExact
	ing := &networkingv1.Ingress{ObjectMeta: meta, Spec: networkingv1.IngressSpec{
		Rules: []networkingv1.IngressRule{{
			Host: domain,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{
					Path: acmeChallengePrefix + token, PathType: &exact,
					Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
						Name: meta.Name, Port: networkingv1.ServiceBackendPort{Number: 80},
					}},
				}},
			}},
		}},
	}}
	if r.className != "" {
		ing.Spec.IngressClassName = &r.className
	}
	_, err := r.backend.client.NetworkingV1().Ingresses(r.namespace).Create(ctx, ing, metav1.CreateOptions{})
	return ignoreExists(err, "ingress", meta.Name)
}

func ignoreExists(err error, kind, name string) error {
	if err == nil || apierrors.IsAlreadyExists(err) {
		return nil
	}
	return fmt.Errorf("ingress: create solver %s %s: %w", kind, name, err)
}

func ignoreNotFound(err error) error {
	if err == nil || apierrors.IsNotFound(err) {
		return nil
	}
	return fmt.Errorf("ingress: delete solver object: %w", err)
}

// createHTTPRoute attaches a route for the exact challenge path of domain to the
// Gateway. Its parentRef names the Gateway without a sectionName, so it attaches to
// every listener that accepts HTTPRoutes for that host — the plain-HTTP one the ACME
// CA connects to among them (GatewayCertificates refuses an http-01 certificate for a
// Gateway without one). For a ListenerSet it names the ListenerSet and its parent
// Gateway, either of which may hold that listener.
func (r route) createHTTPRoute(ctx context.Context, meta metav1.ObjectMeta, domain, token string) error {
	if r.backend.gateways == nil {
		return errors.New("ingress: http-01 for a Gateway needs the Gateway API client")
	}
	exact := gatewayv1.PathMatchExact
	path := acmeChallengePrefix + token
	port := gatewayv1.PortNumber(80)
	hr := &gatewayv1.HTTPRoute{ObjectMeta: meta, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: r.parentRefs()},
		Hostnames:       []gatewayv1.Hostname{gatewayv1.Hostname(domain)},
		Rules: []gatewayv1.HTTPRouteRule{{
			Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &exact, Value: &path}}},
			BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(meta.Name), Port: &port},
			}}},
		}},
	}}
	_, err := r.backend.gateways.GatewayV1().HTTPRoutes(r.namespace).Create(ctx, hr, metav1.CreateOptions{})
	return ignoreExists(err, "httproute", meta.Name)
}

func (r route) deleteHTTPRoute(ctx context.Context, name string) error {
	if r.backend.gateways == nil {
		return nil
	}
	return ignoreNotFound(r.backend.gateways.GatewayV1().HTTPRoutes(r.namespace).Delete(ctx, name, metav1.DeleteOptions{}))
}

func (r route) parentRefs() []gatewayv1.ParentReference {
	if r.kind != KindListenerSet {
		return []gatewayv1.ParentReference{{Name: gatewayv1.ObjectName(r.owner)}}
	}
	group, kind := gatewayv1.Group(gatewayv1.GroupName), gatewayv1.Kind(KindListenerSet)
	refs := []gatewayv1.ParentReference{{Group: &group, Kind: &kind, Name: gatewayv1.ObjectName(r.owner)}}
	if r.parentName != "" {
		parent := gatewayv1.ParentReference{Name: gatewayv1.ObjectName(r.parentName)}
		if r.parentNamespace != r.namespace {
			ns := gatewayv1.Namespace(r.parentNamespace)
			parent.Namespace = &ns
		}
		refs = append(refs, parent)
	}
	return refs
}
