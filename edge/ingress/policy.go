package ingress

import (
	"fmt"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/certmesh/certmesh/edge"
)

// Annotations that ask for certificates. certmesh's own wins; cert-manager's are
// honoured so that a cluster can switch without editing every Ingress.
const (
	AnnotationIssuer              = "certmesh.io/issuer"
	AnnotationCertManagerCluster  = "cert-manager.io/cluster-issuer"
	AnnotationCertManagerIssuer   = "cert-manager.io/issuer"
	annotationIngressClass        = "kubernetes.io/ingress.class"
	acmeChallengePrefix           = "/.well-known/acme-challenge/"
	certificateNameNamespaceSplit = "/"
)

// IssuerName returns the issuer an Ingress asks for, and whether it asks at all.
func IssuerName(annotations map[string]string) (string, bool) {
	for _, key := range []string{AnnotationIssuer, AnnotationCertManagerCluster, AnnotationCertManagerIssuer} {
		if v := strings.TrimSpace(annotations[key]); v != "" {
			return v, true
		}
	}
	return "", false
}

// CertificateName is the edge certificate name of a Secret: "namespace/secret", which
// the Secret store maps back to the Secret and the SDS side serves under that name.
func CertificateName(namespace, secret string) string {
	return namespace + certificateNameNamespaceSplit + secret
}

// SplitCertificateName undoes CertificateName.
func SplitCertificateName(name string) (namespace, secret string) {
	namespace, secret, _ = strings.Cut(name, certificateNameNamespaceSplit)
	return namespace, secret
}

// Desired is what one spec.tls entry asks for, or why it cannot be served.
type Desired struct {
	Spec edge.CertificateSpec
	// Problem, when set, says why the entry is skipped (reported as an Event).
	Problem string
}

// DesiredCertificates is the policy: one certificate per spec.tls entry that names a
// Secret and hosts, for those hosts (lower-cased, deduplicated, in order), from the
// named issuer with its solver. Wildcards need a dns-01 issuer. Entries naming the same
// Secret are merged, as an ingress controller would serve one Secret for both.
func DesiredCertificates(ing *networkingv1.Ingress, issuerName string, iss Issuer) []Desired {
	var out []Desired
	index := map[string]int{}
	for i, tls := range ing.Spec.TLS {
		if tls.SecretName == "" {
			out = append(out, Desired{Problem: fmt.Sprintf("spec.tls[%d] names no secretName", i)})
			continue
		}
		hosts := normalizeHosts(tls.Hosts)
		if len(hosts) == 0 {
			out = append(out, Desired{Problem: fmt.Sprintf("spec.tls[%d] (%s) lists no hosts", i, tls.SecretName)})
			continue
		}
		if iss.Solver.Type != edge.DNS01 && slices.ContainsFunc(hosts, isWildcard) {
			out = append(out, Desired{Problem: fmt.Sprintf("spec.tls[%d] (%s): wildcard hosts need a dns-01 issuer", i, tls.SecretName)})
			continue
		}
		name := CertificateName(ing.Namespace, tls.SecretName)
		if j, ok := index[name]; ok {
			out[j].Spec.DNSNames = normalizeHosts(append(out[j].Spec.DNSNames, hosts...))
			continue
		}
		index[name] = len(out)
		out = append(out, Desired{Spec: edge.CertificateSpec{
			Name: name, DNSNames: hosts, Issuer: issuerName, Solver: iss.Solver,
		}})
	}
	return out
}

func normalizeHosts(in []string) []string {
	out := make([]string, 0, len(in))
	for _, h := range in {
		h = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

func isWildcard(h string) bool { return strings.HasPrefix(h, "*.") }

// ingressSource is an Ingress as ProcessItem sees it.
func ingressSource(ing *networkingv1.Ingress) source {
	return source{
		key: IngressKey(ing.Namespace, ing.Name), uid: ing.UID, version: ing.ResourceVersion,
		annotations: ing.Annotations,
		desired: func(_ map[string]string, issuerName string, iss Issuer) []Desired {
			return DesiredCertificates(ing, issuerName, iss)
		},
		route: func(b *solverBackend) edge.HTTP01Router { return newRoute(b, ing) },
	}
}

// ingressClass returns how the Ingress picks its controller, so the temporary
// challenge Ingress is served by the same one.
func ingressClass(ing *networkingv1.Ingress) (className, annotation string) {
	if ing.Spec.IngressClassName != nil {
		className = *ing.Spec.IngressClassName
	}
	return className, ing.Annotations[annotationIngressClass]
}
