package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DownstreamPathPrefix marks the identities of downstream certmesh servers:
// spiffe://<td>/certmesh/downstream/<name>, granted by a join token made
// for it. Only they may ask this server, as an upstream authority, to sign
// an intermediate, and only for the trust domain DownstreamTrustDomain
// derives from their name.
const DownstreamPathPrefix = ReservedPathPrefix + "downstream/"

// ErrDownstreamName: a downstream's name is not one DNS label.
var ErrDownstreamName = errors.New("identity: a downstream's name must be one DNS label (a-z, 0-9, '-')")

// IsDownstream reports whether id is a downstream certmesh server's identity.
func IsDownstream(id spiffeid.ID) bool { return strings.HasPrefix(id.Path(), DownstreamPathPrefix) }

// DownstreamTrustDomain is the trust domain the downstream id may sign for:
// <name>.<the upstream's trust domain>. Each downstream gets its own,
// disjoint from the upstream's and every sibling's, so that the name
// constraints on its intermediate keep one cluster from minting another's
// identities; one label only, so that no name reaches into a sibling's
// (a.cluster2 under cluster2).
func DownstreamTrustDomain(id spiffeid.ID) (spiffeid.TrustDomain, error) {
	name, ok := strings.CutPrefix(id.Path(), DownstreamPathPrefix)
	if !ok || !isDNSLabel(name) {
		return spiffeid.TrustDomain{}, fmt.Errorf("%w: %s", ErrDownstreamName, id)
	}
	td, err := spiffeid.TrustDomainFromString(name + "." + id.TrustDomain().Name())
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("%w: %s: %v", ErrDownstreamName, id, err)
	}
	return td, nil
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}
