package ingress

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certmesh/certmesh/edge"
)

// Kind is the kind of object that asks for certificates.
type Kind string

// The kinds the controller watches.
const (
	KindIngress     Kind = "Ingress"     // networking.k8s.io/v1
	KindGateway     Kind = "Gateway"     // gateway.networking.k8s.io/v1, when its CRD is served
	KindListenerSet Kind = "ListenerSet" // gateway.networking.k8s.io/v1, when its CRD is served
)

// apiVersion is the group/version each Kind is read in (Events, owner references).
func (k Kind) apiVersion() string {
	if k == KindGateway || k == KindListenerSet {
		return gatewayAPIGroupVersion
	}
	return "networking.k8s.io/v1"
}

// Key names one object that asks for certificates; it is the work queue's item and
// the owner of the certificates the object asks for.
type Key struct {
	Kind      Kind
	Namespace string
	Name      string
}

// IngressKey, GatewayKey and ListenerSetKey name an object of each kind.
func IngressKey(namespace, name string) Key     { return Key{KindIngress, namespace, name} }
func GatewayKey(namespace, name string) Key     { return Key{KindGateway, namespace, name} }
func ListenerSetKey(namespace, name string) Key { return Key{KindListenerSet, namespace, name} }

// String is "Kind namespace/name", as logs and conflict Events show it.
func (k Key) String() string { return string(k.Kind) + " " + k.Ref() }

// Ref is "namespace/name".
func (k Key) Ref() string { return k.Namespace + "/" + k.Name }

// source is one object asking for certificates, whatever its kind: what ProcessItem
// needs to know of it.
type source struct {
	key         Key
	uid         types.UID
	version     string // resourceVersion, for Events
	annotations map[string]string
	// desired applies the kind's policy (DesiredCertificates, GatewayCertificates);
	// nsLabels are the labels of the object's namespace, read only when
	// selectsNamespace says an attachment rule selects namespaces by label.
	desired          func(nsLabels map[string]string, issuerName string, iss Issuer) []Desired
	selectsNamespace bool
	// route makes the HTTP-01 router that sends the challenge path through this
	// object's data plane (a temporary Ingress, or an HTTPRoute on the Gateway or
	// ListenerSet).
	route func(*solverBackend) edge.HTTP01Router
}

// reference is the object as an Event's involvedObject.
func (s source) reference() corev1.ObjectReference {
	return corev1.ObjectReference{
		APIVersion: s.key.Kind.apiVersion(), Kind: string(s.key.Kind),
		Namespace: s.key.Namespace, Name: s.key.Name, UID: s.uid, ResourceVersion: s.version,
	}
}
