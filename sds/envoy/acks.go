package envoy

import (
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/certmesh/certmesh/ca/wire"
)

// BundleAcks learns which trust bundle each stream's Envoy has accepted, so
// that a CA rotation can wait until every Envoy trusts the new root before
// anything is signed with it. The agent implements it.
type BundleAcks interface {
	// BundleAcked records that Envoy ACKed a response carrying the bundle
	// with this digest (wire.BundleDigest) on stream.
	BundleAcked(stream uint64, digest [32]byte)
	// StreamGone forgets a stream that ended.
	StreamGone(stream uint64)
}

type noAcks struct{}

func (noAcks) BundleAcked(uint64, [32]byte) {}
func (noAcks) StreamGone(uint64)            {}

var streamIDs atomic.Uint64

// bundleOf returns the trust bundle among items, if the response carries one.
func bundleOf(items []item) *x509bundle.Bundle {
	for _, it := range items {
		if it.bundle != nil {
			return it.bundle
		}
	}
	return nil
}

// onACK records the bundle of the acknowledged response.
func (s *stream) onACK() {
	if s.pendingBundle != nil {
		s.h.acks.BundleAcked(s.id, wire.BundleDigest(s.pendingBundle.X509Authorities()))
		s.pendingBundle = nil
	}
}
