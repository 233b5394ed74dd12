package envoy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/certmesh/certmesh/identity"
)

// Resource names with a fixed meaning. They are the names Istio's agent
// uses, so an Envoy bootstrap written for Istio works unchanged.
const (
	// NameDefault is the caller's own certificate and key.
	NameDefault = "default"
	// NameRootCA is the trust bundle of the agent's trust domain.
	NameRootCA = "ROOTCA"
)

// SecretTypeURL is the only type_url this service answers.
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// maxNameLen bounds one resource name. No legitimate name (a SPIFFE ID is
// at most 2048 bytes by spec, edge names are DNS-like) comes near it in
// practice, and it keeps error messages that echo a name small.
const maxNameLen = 2048

// Sentinel errors of request handling; the gRPC boundary maps them to status
// codes (refuse), tests branch on them with errors.Is.
var (
	// ErrUnknownResource: a name that means nothing to this agent or caller.
	ErrUnknownResource = errors.New("envoy: unknown resource")
	// ErrForbiddenResource: another workload's SPIFFE ID.
	ErrForbiddenResource = errors.New("envoy: resource not granted to caller")
	// ErrInvalidRequest: a malformed request (type_url, too many names...).
	ErrInvalidRequest = errors.New("envoy: invalid request")
)

// kind is what a resource name resolves to.
type kind uint8

const (
	kindSVID kind = iota + 1
	kindBundle
	kindEdge
)

// resource is a requested name with its meaning for this caller, decided
// once when the subscription changes rather than on every push. A stream
// also keeps in it the digest it last sent under the name: a subscription
// is one to three names, for which a slice beats a map.
type resource struct {
	name    string
	kind    kind
	hasSent bool
	sent    [sha256.Size]byte
}

// item is the current content of one resource, ready to send.
type item struct {
	name   string
	any    *anypb.Any
	digest [sha256.Size]byte
	// bundle is set on trust bundle resources, to track what Envoy accepted.
	bundle *x509bundle.Bundle
}

// classify decides what name means for the caller. It is a pure function so
// the naming policy has a table test of its own. Edge names not granted to
// the caller are reported as unknown rather than forbidden, so a workload
// cannot probe which edge certificates exist.
func classify(name string, ident identity.Identity, td spiffeid.TrustDomain) (kind, error) {
	switch {
	case name == NameDefault || name == ident.ID.String():
		return kindSVID, nil
	case name == NameRootCA || name == td.IDString():
		return kindBundle, nil
	case slices.Contains(ident.EdgeCertificates, name):
		return kindEdge, nil
	}
	if id, err := spiffeid.FromString(name); err == nil && id.Path() != "" {
		return 0, fmt.Errorf("%w: %q", ErrForbiddenResource, name)
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknownResource, name)
}

// checkRequest rejects requests no Envoy would send, before any other
// processing, so that even a stale request cannot make the agent do work
// proportional to garbage. An empty type_url is accepted because the
// service only serves one type.
func checkRequest(req *discoveryv3.DiscoveryRequest, maxNames int) error {
	if req.GetTypeUrl() != "" && req.GetTypeUrl() != SecretTypeURL {
		return fmt.Errorf("%w: type_url %.120q is not %s", ErrInvalidRequest, req.GetTypeUrl(), SecretTypeURL)
	}
	if n := len(req.GetResourceNames()); n > maxNames {
		return fmt.Errorf("%w: %d resource names, at most %d allowed", ErrInvalidRequest, n, maxNames)
	}
	for _, name := range req.GetResourceNames() {
		if name == "" || len(name) > maxNameLen {
			return fmt.Errorf("%w: resource name of length %d", ErrInvalidRequest, len(name))
		}
	}
	if err := req.ValidateAll(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	return nil
}

// normalize returns the requested names sorted and without duplicates, so
// that a reordered request is not mistaken for a change of subscription.
func normalize(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return slices.Compact(out)
}

// plan classifies every name of a subscription; the first refused name
// refuses the whole request, as Envoy cannot use a partial answer to a
// mistyped bootstrap anyway.
func plan(names []string, ident identity.Identity, td spiffeid.TrustDomain) ([]resource, error) {
	rs := make([]resource, 0, len(names))
	for _, name := range names {
		k, err := classify(name, ident, td)
		if err != nil {
			return nil, err
		}
		rs = append(rs, resource{name: name, kind: k})
	}
	return rs, nil
}

// tlsCertificateSecret wraps a PEM chain and PKCS#8 key as Envoy wants them:
// inline bytes, never a file path, so the key stays in memory.
func tlsCertificateSecret(name string, chainPEM, keyPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inlineBytes(chainPEM),
			PrivateKey:       inlineBytes(keyPEM),
		}},
	}
}

// validationContextSecret carries the trust bundle as trusted_ca; the SAN
// match stays in the bootstrap, where the operator says whom to trust.
func validationContextSecret(name string, bundlePEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inlineBytes(bundlePEM),
		}},
	}
}

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// newItem packs a secret and digests its bytes. Marshalling is deterministic
// so equal content gives an equal digest, which is how a stream decides
// whether a change concerns it.
func newItem(s *tlsv3.Secret) (item, error) {
	a := new(anypb.Any)
	if err := anypb.MarshalFrom(a, s, proto.MarshalOptions{Deterministic: true}); err != nil {
		return item{}, fmt.Errorf("envoy: marshal secret %q: %w", s.GetName(), err)
	}
	return item{name: s.GetName(), any: a, digest: sha256.Sum256(a.GetValue())}, nil
}
