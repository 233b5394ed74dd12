package envoy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/certmesh/certmesh/identity"
)

// stream is the state of one StreamSecrets call. Its own goroutine handles
// requests; the fan-out's workers push changes. mu serialises the two, so
// requests, pushes and their bookkeeping never interleave and two Sends are
// never concurrent, as gRPC requires.
type stream struct {
	h     *Handler
	srv   secretv3.SecretDiscoveryService_StreamSecretsServer
	ident identity.Identity
	// id names the stream to the BundleAcks.
	id uint64
	// slot is the stream's index in h.fan.streams, guarded by h.fan.mu.
	slot int
	// changed is set by the fan-out when the source changed; whoever holds
	// mu next looks at it (settle).
	changed atomic.Bool

	// mu guards the fields below. It is held across Send, which is why the
	// fan-out only ever tries it.
	mu sync.Mutex
	// version counts responses on this stream. nonce is the random nonce of
	// the last response sent, zero before the first: unguessable, so that an
	// answer to it proves the response was received (see unackedBudget).
	version uint64
	nonce   uint64
	// resources is the normalized subscription, sorted by name, with the
	// digest last sent for each, so a change that leaves this stream's bytes
	// alone sends nothing.
	resources []resource
	// pendingBundle is the bundle of the last response, recorded once Envoy
	// ACKs it.
	pendingBundle *x509bundle.Bundle
	// unacked counts the bytes sent since Envoy last answered; deferred
	// marks a change held back because they reached unackedBudget.
	unacked  int
	deferred bool
	// done is set when the handler returns: nothing may be sent after.
	done bool
	// additive is set once the client sent a request without a nonce on
	// the open stream (addNames): its requests add names, never remove.
	additive bool
}

// StreamSecrets serves one Envoy SDS stream: attest the caller, then handle
// requests on this goroutine until the stream ends. Changes of the source
// are pushed by the handler's fan-out, so an idle stream costs one
// goroutine, parked in Recv.
func (h *Handler) StreamSecrets(srv secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	ctx := srv.Context()
	ident, err := h.attest(ctx)
	if err != nil {
		return err
	}
	h.metrics.streamsOpen.Inc()
	defer h.metrics.streamsOpen.Dec()

	s := &stream{h: h, srv: srv, ident: ident, id: streamIDs.Add(1)}
	defer h.acks.StreamGone(s.id)
	h.register(s)
	defer h.unregister(s)
	defer s.close()
	for {
		req, err := srv.Recv()
		if err != nil {
			return endOfStream(err)
		}
		if err := s.handle(ctx, req); err != nil {
			return err
		}
	}
}

// handle applies one request, then pushes any change that arrived
// meanwhile (or was deferred until Envoy answered).
func (s *stream) handle(ctx context.Context, req *discoveryv3.DiscoveryRequest) error {
	s.mu.Lock()
	if err := s.onRequest(ctx, req); err != nil {
		s.mu.Unlock()
		return err
	}
	return s.settle()
}

// close stops all pushes; a push in progress finishes first. gRPC forbids
// sending once the handler has returned.
func (s *stream) close() {
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
}

// endOfStream turns the client closing its side into a clean return.
func endOfStream(err error) error {
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// onRequest applies the xDS rules to one request: garbage is refused, a
// stale nonce ignored, a NACK logged and counted (the rejected version is
// not resent), and only a change of names is answered. A request without a
// nonce on an open stream adds to the subscription (addNames).
func (s *stream) onRequest(ctx context.Context, req *discoveryv3.DiscoveryRequest) error {
	if err := checkRequest(req, s.h.maxNames); err != nil {
		return s.h.refuse(ctx, s.logger(), err)
	}
	if req.GetResponseNonce() == "" && len(req.GetResourceNames()) == 0 {
		return s.h.refuse(ctx, s.logger(), fmt.Errorf("%w: no resource names (SDS has no wildcard subscription)", ErrInvalidRequest))
	}
	if s.nonce != 0 && req.GetResponseNonce() == "" {
		return s.addNames(ctx, req.GetResourceNames())
	}
	if s.nonce != 0 && !s.isNonce(req.GetResponseNonce()) {
		s.h.log.DebugContext(ctx, "envoy: stale nonce, request ignored", attrSPIFFEID, s.ident.ID.String(), attrNonce, req.GetResponseNonce())
		return nil
	}
	if s.nonce != 0 {
		s.unacked = 0 // Envoy answered the last response, so it has read everything sent
	}
	if req.GetErrorDetail() != nil {
		s.onNACK(ctx, req)
	} else if s.nonce != 0 {
		s.onACK()
	}
	names := normalize(req.GetResourceNames())
	if s.additive {
		names = s.withSubscribed(names)
	}
	if s.nonce != 0 && slices.EqualFunc(names, s.resources, func(n string, r resource) bool { return n == r.name }) {
		return nil // ACK, or NACK of the current set: wait for a change
	}
	return s.resubscribe(ctx, names)
}

// resubscribe makes names (normalized) the subscription and answers it.
func (s *stream) resubscribe(ctx context.Context, names []string) error {
	if len(names) > s.h.maxNames {
		return s.h.refuse(ctx, s.logger(), fmt.Errorf("%w: %d resource names subscribed on one stream, at most %d allowed", ErrInvalidRequest, len(names), s.h.maxNames))
	}
	rs, err := plan(names, s.ident, s.h.src.TrustDomain())
	if err != nil {
		return s.h.refuse(ctx, s.logger(), err)
	}
	s.subscribe(rs)
	return s.push(true)
}

// addNames serves a client that asks for one secret at a time on one
// stream, each request with an empty response_nonce (Envoy names the last
// response in every request after the first). Replacing the subscription,
// as Envoy's requests do, would drop what the client asked for before, and
// ignoring the request as a stale nonce would leave it waiting forever. So
// the names join the subscription and the whole set is answered at once.
// From then on the stream is additive: such a client ACKs naming only the
// secret it asked for, so its later requests add names and never remove
// any, and every name keeps receiving rotations. Envoy never sends an
// empty nonce on an open stream, so its streams are never additive.
func (s *stream) addNames(ctx context.Context, names []string) error {
	s.additive = true
	return s.resubscribe(ctx, s.withSubscribed(normalize(names)))
}

// withSubscribed returns the normalized union of names and the names
// subscribed now.
func (s *stream) withSubscribed(names []string) []string {
	all := make([]string, 0, len(s.resources)+len(names))
	for _, r := range s.resources {
		all = append(all, r.name)
	}
	return normalize(append(all, names...))
}

// isNonce reports whether n is the nonce of the last response, without
// allocating.
func (s *stream) isNonce(n string) bool {
	var buf [16]byte
	return string(strconv.AppendUint(buf[:0], s.nonce, 16)) == n
}

// logger is the handler's logger with the caller's ID, built only when a
// refusal is logged: an idle stream keeps no logger of its own.
func (s *stream) logger() *slog.Logger {
	return s.h.log.With(attrSPIFFEID, s.ident.ID.String())
}

func (s *stream) onNACK(ctx context.Context, req *discoveryv3.DiscoveryRequest) {
	s.h.metrics.nacks.Inc()
	s.h.log.WarnContext(ctx, "envoy: Envoy rejected secrets", attrSPIFFEID, s.ident.ID.String(),
		attrNames, req.GetResourceNames(), attrNonce, req.GetResponseNonce(),
		attrVersion, req.GetVersionInfo(), attrError, req.GetErrorDetail().GetMessage())
}

// subscribe replaces the subscription, keeping what was sent for names
// still watched; a name no longer watched is forgotten, so re-adding it
// later sends it again.
func (s *stream) subscribe(rs []resource) {
	for i := range rs {
		if j, found := slices.BinarySearchFunc(s.resources, rs[i].name, byName); found {
			rs[i].sent, rs[i].hasSent = s.resources[j].sent, s.resources[j].hasSent
		}
	}
	s.resources = rs
}

func byName(r resource, name string) int {
	switch {
	case r.name < name:
		return -1
	case r.name > name:
		return 1
	}
	return 0
}

// push sends the subscribed resources when their bytes differ from what was
// last sent, or unconditionally (force) after the subscription changed.
// Nothing available yet means nothing to send: the next change retries.
// It is called with mu held.
func (s *stream) push(force bool) error {
	ctx := s.srv.Context()
	items, err := s.h.snapshot(s.resources, s.ident)
	if err != nil {
		return s.h.refuse(ctx, s.logger(), err)
	}
	if len(items) == 0 || (!force && !s.differs(items)) {
		return nil
	}
	resp, nonce, err := s.response(items)
	if err != nil {
		return s.h.refuse(ctx, s.logger(), err)
	}
	if err := s.srv.Send(resp); err != nil {
		s.done = true // the stream is broken; its goroutine ends with Recv's error
		return err
	}
	s.recordSent(items)
	s.nonce = nonce
	s.unacked += proto.Size(resp)
	s.pendingBundle = bundleOf(items)
	s.h.metrics.pushes.Inc()
	s.h.log.DebugContext(ctx, "envoy: pushed secrets", attrSPIFFEID, s.ident.ID.String(), attrVersion, resp.GetVersionInfo(), attrCount, len(items))
	return nil
}

// find returns the subscribed resource named name. items come from
// snapshot(s.resources), so it is always there.
func (s *stream) find(name string) *resource {
	i, _ := slices.BinarySearchFunc(s.resources, name, byName)
	return &s.resources[i]
}

func (s *stream) differs(items []item) bool {
	for _, it := range items {
		if r := s.find(it.name); !r.hasSent || r.sent != it.digest {
			return true
		}
	}
	return false
}

func (s *stream) recordSent(items []item) {
	for _, it := range items {
		r := s.find(it.name)
		r.sent, r.hasSent = it.digest, true
	}
}

// response builds the next version of this stream with a fresh nonce.
func (s *stream) response(items []item) (*discoveryv3.DiscoveryResponse, uint64, error) {
	nonce, err := s.h.newNonce()
	if err != nil {
		return nil, 0, err
	}
	s.version++
	anys := make([]*anypb.Any, len(items))
	for i, it := range items {
		anys[i] = it.any
	}
	return &discoveryv3.DiscoveryResponse{
		VersionInfo: strconv.FormatUint(s.version, 10),
		Nonce:       strconv.FormatUint(nonce, 16),
		TypeUrl:     SecretTypeURL,
		Resources:   anys,
	}, nonce, nil
}

// newNonce draws a non-zero nonce from the handler's random source.
func (h *Handler) newNonce() (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(h.rand, b[:]); err != nil {
		return 0, fmt.Errorf("envoy: nonce: %w", err)
	}
	return max(binary.LittleEndian.Uint64(b[:]), 1), nil
}
