package envoy

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/certmesh/certmesh/identity"
)

// stream is the state of one StreamSecrets call. Only the stream's own loop
// touches it, so it needs no lock.
type stream struct {
	h     *Handler
	srv   secretv3.SecretDiscoveryService_StreamSecretsServer
	ident identity.Identity
	log   *slog.Logger

	// version counts responses on this stream; the nonce of a response is
	// its version, which is unique within the stream and needs no
	// randomness.
	version uint64
	nonce   string
	// names is the normalized subscription, resources its meaning.
	names     []string
	resources []resource
	// sent holds the digest of what was last sent per name, so a change
	// that leaves this stream's bytes alone sends nothing.
	sent map[string][sha256.Size]byte
	// id names the stream to the BundleAcks; pendingBundle is the bundle
	// of the last response, recorded once Envoy ACKs it.
	id            uint64
	pendingBundle *x509bundle.Bundle
}

// StreamSecrets serves one Envoy SDS stream: attest the caller, then loop
// over requests, source changes and the end of the stream. Receiving runs
// on its own goroutine so the loop can select; it ends with the stream.
func (h *Handler) StreamSecrets(srv secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	ctx := srv.Context()
	ident, err := h.attest(ctx)
	if err != nil {
		return err
	}
	h.metrics.streamsOpen.Inc()
	defer h.metrics.streamsOpen.Dec()

	s := &stream{h: h, srv: srv, ident: ident, log: h.log.With(attrSPIFFEID, ident.ID.String()), sent: map[string][sha256.Size]byte{}, id: streamIDs.Add(1)}
	defer h.acks.StreamGone(s.id)
	reqs := make(chan *discoveryv3.DiscoveryRequest)
	recvErr := make(chan error, 1)
	go receive(srv, reqs, recvErr)
	return s.run(ctx, reqs, recvErr)
}

// receive feeds requests to the loop until Recv fails. Recv fails once the
// handler returns (gRPC cancels the stream), and the send to reqs gives up
// on the context, so this goroutine never outlives the stream.
func receive(srv secretv3.SecretDiscoveryService_StreamSecretsServer, reqs chan<- *discoveryv3.DiscoveryRequest, errc chan<- error) {
	ctx := srv.Context()
	for {
		req, err := srv.Recv()
		if err != nil {
			errc <- err
			return
		}
		select {
		case reqs <- req:
		case <-ctx.Done():
			return
		}
	}
}

// run is the stream loop. Changed is fetched before anything is built, so
// a change that lands while a response is being built is never missed.
func (s *stream) run(ctx context.Context, reqs <-chan *discoveryv3.DiscoveryRequest, recvErr <-chan error) error {
	changed := s.h.src.Changed()
	for {
		var err error
		select {
		case req := <-reqs:
			err = s.onRequest(ctx, req)
		case <-changed:
			changed = s.h.src.Changed()
			err = s.push(false)
		case err = <-recvErr:
			return endOfStream(err)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		if err != nil {
			return err
		}
	}
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
// not resent), and only a change of names is answered.
func (s *stream) onRequest(ctx context.Context, req *discoveryv3.DiscoveryRequest) error {
	if err := checkRequest(req, s.h.maxNames); err != nil {
		return s.h.refuse(ctx, s.log, err)
	}
	if s.nonce != "" && req.GetResponseNonce() != s.nonce {
		s.log.DebugContext(ctx, "envoy: stale nonce, request ignored", attrNonce, req.GetResponseNonce())
		return nil
	}
	if req.GetErrorDetail() != nil {
		s.onNACK(ctx, req)
	} else if s.nonce != "" {
		s.onACK()
	}
	names := normalize(req.GetResourceNames())
	if s.nonce != "" && slices.Equal(names, s.names) {
		return nil // ACK, or NACK of the current set: wait for a change
	}
	rs, err := plan(names, s.ident, s.h.src.TrustDomain())
	if err != nil {
		return s.h.refuse(ctx, s.log, err)
	}
	s.subscribe(names, rs)
	return s.push(true)
}

func (s *stream) onNACK(ctx context.Context, req *discoveryv3.DiscoveryRequest) {
	s.h.metrics.nacks.Inc()
	s.log.WarnContext(ctx, "envoy: Envoy rejected secrets",
		attrNames, req.GetResourceNames(), attrNonce, req.GetResponseNonce(),
		attrVersion, req.GetVersionInfo(), attrError, req.GetErrorDetail().GetMessage())
}

// subscribe replaces the subscription and forgets what was sent for names
// no longer watched, so re-adding a name later sends it again.
func (s *stream) subscribe(names []string, rs []resource) {
	s.names, s.resources = names, rs
	for name := range s.sent {
		if _, found := slices.BinarySearch(names, name); !found {
			delete(s.sent, name)
		}
	}
}

// push sends the subscribed resources when their bytes differ from what was
// last sent, or unconditionally (force) after the subscription changed.
// Nothing available yet means nothing to send: the next change retries.
func (s *stream) push(force bool) error {
	items, err := s.h.snapshot(s.resources, s.ident)
	if err != nil {
		return s.h.refuse(s.srv.Context(), s.log, err)
	}
	if len(items) == 0 || (!force && !s.differs(items)) {
		return nil
	}
	resp := s.response(items)
	if err := s.srv.Send(resp); err != nil {
		return err
	}
	for _, it := range items {
		s.sent[it.name] = it.digest
	}
	s.nonce = resp.GetNonce()
	s.pendingBundle = bundleOf(items)
	s.h.metrics.pushes.Inc()
	s.log.DebugContext(s.srv.Context(), "envoy: pushed secrets", attrVersion, resp.GetVersionInfo(), attrCount, len(items))
	return nil
}

func (s *stream) differs(items []item) bool {
	for _, it := range items {
		if d, ok := s.sent[it.name]; !ok || d != it.digest {
			return true
		}
	}
	return false
}

// response builds the next version of this stream.
func (s *stream) response(items []item) *discoveryv3.DiscoveryResponse {
	s.version++
	v := strconv.FormatUint(s.version, 10)
	anys := make([]*anypb.Any, len(items))
	for i, it := range items {
		anys[i] = it.any
	}
	return &discoveryv3.DiscoveryResponse{VersionInfo: v, Nonce: v, TypeUrl: SecretTypeURL, Resources: anys}
}
