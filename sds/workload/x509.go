package workload

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
)

// FetchX509SVID streams the caller's X.509-SVID with its key and the trust
// bundle, and a new message whenever any of them changes (rotation, CA
// rotation). Until the caller's first SVID is issued the stream waits.
func (h *Handler) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream grpc.ServerStreamingServer[workloadpb.X509SVIDResponse]) error {
	ctx := stream.Context()
	id, err := h.authorize(ctx, methodX509SVID)
	if err != nil {
		return err
	}
	build := func() (*workloadpb.X509SVIDResponse, bool, error) { return h.x509SVIDResponse(id.ID) }
	sid := streamIDs.Add(1)
	defer h.acks.StreamGone(sid)
	return watch(ctx, h, methodX509SVID, build, h.trackSVIDs(sid, stream.Send))
}

// FetchX509Bundles streams the trust bundle, keyed by trust domain ID, and a
// new message whenever it changes.
func (h *Handler) FetchX509Bundles(_ *workloadpb.X509BundlesRequest, stream grpc.ServerStreamingServer[workloadpb.X509BundlesResponse]) error {
	ctx := stream.Context()
	if _, err := h.authorize(ctx, methodX509Bundles); err != nil {
		return err
	}
	sid := streamIDs.Add(1)
	defer h.acks.StreamGone(sid)
	return watch(ctx, h, methodX509Bundles, h.x509BundlesResponse, h.trackBundles(sid, stream.Send))
}

// x509SVIDResponse builds the caller's message, or false while its SVID or
// the bundle is missing.
func (h *Handler) x509SVIDResponse(id spiffeid.ID) (*workloadpb.X509SVIDResponse, bool, error) {
	svid, ok := h.src.X509SVID(id)
	if !ok || svid == nil {
		return nil, false, nil
	}
	if svid.ID != id {
		// Never hand out someone else's identity, whatever the source says.
		return nil, false, fmt.Errorf("workload: source returned %s for %s", svid.ID, id)
	}
	roots, ok := h.x509Roots()
	if !ok {
		return nil, false, nil
	}
	certs, key, err := svid.MarshalRaw()
	if err != nil {
		return nil, false, fmt.Errorf("workload: marshal SVID %s: %w", id, err)
	}
	return &workloadpb.X509SVIDResponse{Svids: []*workloadpb.X509SVID{{
		SpiffeId:    id.String(),
		X509Svid:    certs,
		X509SvidKey: key,
		Bundle:      roots,
	}}}, true, nil
}

// x509BundlesResponse builds the bundles message, or false while there is
// no bundle yet.
func (h *Handler) x509BundlesResponse() (*workloadpb.X509BundlesResponse, bool, error) {
	roots, ok := h.x509Roots()
	if !ok {
		return nil, false, nil
	}
	return &workloadpb.X509BundlesResponse{
		Bundles: map[string][]byte{h.src.TrustDomain().IDString(): roots},
	}, true, nil
}

// x509Roots is the own trust domain's bundle as concatenated DER, the
// encoding the Workload API uses for bundles.
func (h *Handler) x509Roots() ([]byte, bool) {
	b := h.src.X509Bundle()
	if b == nil || b.Empty() {
		return nil, false
	}
	return concatDER(b), true
}

func concatDER(b *x509bundle.Bundle) []byte {
	var out []byte
	for _, c := range b.X509Authorities() {
		out = append(out, c.Raw...)
	}
	return out
}
