package workload

import (
	"sync/atomic"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"

	"github.com/certmesh/certmesh/ca/wire"
)

// BundleAcks learns which trust bundle each X.509 stream was last sent, so
// that a CA rotation can wait until every watcher holds the new root. The
// Workload API has no acknowledgement: a completed Send is the signal.
type BundleAcks interface {
	BundleAcked(stream uint64, digest [32]byte)
	StreamGone(stream uint64)
}

type noAcks struct{}

func (noAcks) BundleAcked(uint64, [32]byte) {}
func (noAcks) StreamGone(uint64)            {}

var streamIDs atomic.Uint64

// trackSVIDs wraps a FetchX509SVID send to record the bundle it carried.
func (h *Handler) trackSVIDs(id uint64, send func(*workloadpb.X509SVIDResponse) error) func(*workloadpb.X509SVIDResponse) error {
	return func(m *workloadpb.X509SVIDResponse) error {
		if err := send(m); err != nil {
			return err
		}
		if svids := m.GetSvids(); len(svids) > 0 {
			h.acks.BundleAcked(id, wire.DigestDER(svids[0].GetBundle()))
		}
		return nil
	}
}

// trackBundles wraps a FetchX509Bundles send to record the bundle it carried.
func (h *Handler) trackBundles(id uint64, send func(*workloadpb.X509BundlesResponse) error) func(*workloadpb.X509BundlesResponse) error {
	return func(m *workloadpb.X509BundlesResponse) error {
		if err := send(m); err != nil {
			return err
		}
		h.acks.BundleAcked(id, wire.DigestDER(m.GetBundles()[h.src.TrustDomain().IDString()]))
		return nil
	}
}
