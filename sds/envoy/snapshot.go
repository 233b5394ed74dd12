package envoy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/certmesh/certmesh/identity"
)

// lookup builds the current content of r, or reports false while it is not
// available yet (an SVID still being fetched, an edge certificate still
// being ordered): the caller then waits for the next change instead of
// failing a workload that merely started first.
func (h *Handler) lookup(r resource, ident identity.Identity) (item, bool, error) {
	gen := h.src.Changed()
	switch r.kind {
	case kindSVID:
		svid, ok := h.src.X509SVID(ident.ID)
		if !ok || svid == nil {
			return item{}, false, nil
		}
		it, err := h.cache.get(gen, cacheKey{r.name, r.kind, svid}, func() (item, error) { return svidItem(r.name, svid) })
		return it, err == nil, err
	case kindBundle:
		b := h.src.X509Bundle()
		if b == nil || b.Empty() {
			return item{}, false, nil
		}
		it, err := h.cache.get(gen, cacheKey{r.name, r.kind, b}, func() (item, error) { return bundleItem(r.name, b) })
		it.bundle = b
		return it, err == nil, err
	case kindEdge:
		cert, key, ok := h.src.EdgeCertificate(r.name)
		if !ok {
			return item{}, false, nil
		}
		it, err := h.cache.get(gen, cacheKey{r.name, r.kind, nil}, func() (item, error) {
			return newItem(tlsCertificateSecret(r.name, cert, key))
		})
		return it, err == nil, err
	default:
		return item{}, false, fmt.Errorf("envoy: resource %q of unknown kind %d", r.name, r.kind)
	}
}

func svidItem(name string, svid *x509svid.SVID) (item, error) {
	chain, key, err := svid.Marshal()
	if err != nil {
		return item{}, fmt.Errorf("envoy: encode SVID %q: %w", svid.ID, err)
	}
	return newItem(tlsCertificateSecret(name, chain, key))
}

func bundleItem(name string, b *x509bundle.Bundle) (item, error) {
	pem, err := b.Marshal()
	if err != nil {
		return item{}, fmt.Errorf("envoy: encode bundle: %w", err)
	}
	return newItem(validationContextSecret(name, pem))
}

// snapshot returns the content of every available resource of rs, in the
// order of rs.
func (h *Handler) snapshot(rs []resource, ident identity.Identity) ([]item, error) {
	items := make([]item, 0, len(rs))
	for _, r := range rs {
		it, ok, err := h.lookup(r, ident)
		if err != nil {
			return nil, err
		}
		if ok {
			items = append(items, it)
		}
	}
	return items, nil
}

// FetchSecrets answers one request. A known resource that is not available
// yet is waited for (until the caller's deadline), as on a stream; the
// version is derived from the content, so equal answers carry equal versions.
func (h *Handler) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	ident, err := h.attest(ctx)
	if err != nil {
		return nil, err
	}
	log := h.log.With(attrSPIFFEID, ident.ID.String())
	if err := checkRequest(req, h.maxNames); err != nil {
		return nil, h.refuse(ctx, log, err)
	}
	rs, err := plan(normalize(req.GetResourceNames()), ident, h.src.TrustDomain())
	if err != nil {
		return nil, h.refuse(ctx, log, err)
	}
	for {
		changed := h.src.Changed()
		items, err := h.snapshot(rs, ident)
		if err != nil {
			return nil, h.refuse(ctx, log, err)
		}
		if len(items) == len(rs) {
			return fetchResponse(items), nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

func fetchResponse(items []item) *discoveryv3.DiscoveryResponse {
	sum := sha256.New()
	anys := make([]*anypb.Any, len(items))
	for i, it := range items {
		sum.Write(it.digest[:])
		anys[i] = it.any
	}
	return &discoveryv3.DiscoveryResponse{
		VersionInfo: hex.EncodeToString(sum.Sum(nil)[:8]),
		TypeUrl:     SecretTypeURL,
		Resources:   anys,
	}
}
