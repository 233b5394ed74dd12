package envoy

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/certmesh/certmesh/identity"
)

// FuzzDiscoveryRequest feeds arbitrary wire bytes through what the handler
// does with a request before touching any secret: decode, check, normalize
// and plan. Nothing may panic, and a plan may only ever name the caller's
// own identity or bundle.
func FuzzDiscoveryRequest(f *testing.F) {
	seed, _ := proto.Marshal(&discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: "envoy"}, ResourceNames: []string{"default", "ROOTCA", "spiffe://example.org/web", "shop"},
		TypeUrl: SecretTypeURL, ResponseNonce: "1", ErrorDetail: &status.Status{Message: "nack"},
	})
	f.Add(seed)
	f.Add([]byte{})
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ident := identity.Identity{ID: spiffeid.RequireFromString("spiffe://example.org/web"), EdgeCertificates: []string{"shop"}}
	f.Fuzz(func(t *testing.T, wire []byte) {
		var req discoveryv3.DiscoveryRequest
		if proto.Unmarshal(wire, &req) != nil {
			return
		}
		if checkRequest(&req, DefaultMaxResourceNames) != nil {
			return
		}
		rs, err := plan(normalize(req.GetResourceNames()), ident, td)
		if err != nil {
			return
		}
		for _, r := range rs {
			if r.kind == kindSVID && r.name != NameDefault && r.name != ident.ID.String() {
				t.Fatalf("planned another identity's certificate: %q", r.name)
			}
		}
	})
}
