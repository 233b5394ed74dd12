package envoy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/certmesh/certmesh/identity"
)

// TestStreamEnvoyLifecycle plays Envoy: subscribe, ACK, NACK once, see the
// rotation pushed, and never see the rejected version resent.
func TestStreamEnvoyLifecycle(t *testing.T) {
	e := newEnv(t, true)
	v := e.envoy(t)

	v.send([]string{NameDefault, NameRootCA}, nil, "")
	r1 := v.mustRecv()
	require.Equal(t, "1", r1.GetVersionInfo())
	require.Equal(t, SecretTypeURL, r1.GetTypeUrl())
	got := secrets(t, r1)
	require.Len(t, got, 2)
	require.Equal(t, testID, svidOf(t, got[NameDefault]).ID.String())
	roots, err := x509bundle.Parse(e.ca.TrustDomain(), got[NameRootCA].GetValidationContext().GetTrustedCa().GetInlineBytes())
	require.NoError(t, err)
	require.True(t, roots.Equal(e.ca.Bundle()))

	// The caller was attested from kernel peer credentials of this process.
	require.NotEmpty(t, e.att.creds)
	require.NotNil(t, e.att.creds[0].Peer)
	require.Equal(t, uint32(os.Getuid()), e.att.creds[0].Peer.UID)

	v.send([]string{NameDefault, NameRootCA}, r1, "")                // ACK
	v.send([]string{NameDefault, NameRootCA}, r1, "bad certificate") // NACK
	require.Eventually(t, func() bool { return testutil.ToFloat64(e.metrics.nacks) == 1 }, waitFor, time.Millisecond)

	rotated := e.rotate(t)
	r2 := v.mustRecv() // had the ACK or NACK caused a resend, this would be version 2 with the old SVID
	require.Equal(t, "2", r2.GetVersionInfo())
	require.Equal(t, rotated.Certificates[0].Raw, svidOf(t, secrets(t, r2)[NameDefault]).Certificates[0].Raw)
	require.Equal(t, 2.0, testutil.ToFloat64(e.metrics.pushes))
}

// TestStreamStaleNonceIgnored: a request answering an older response must
// not change the subscription; Envoy resends with the newest nonce.
func TestStreamStaleNonceIgnored(t *testing.T) {
	e := newEnv(t, true)
	v := e.envoy(t)
	v.send([]string{NameDefault}, nil, "")
	r1 := v.mustRecv()
	e.rotate(t)
	r2 := v.mustRecv()
	require.Equal(t, "2", r2.GetVersionInfo())

	v.send([]string{NameDefault, NameRootCA}, r1, "") // stale: answers version 1
	e.rotate(t)
	r3 := v.mustRecv()
	require.Equal(t, "3", r3.GetVersionInfo())
	require.Len(t, r3.GetResources(), 1, "the stale request must not have added ROOTCA")

	v.send([]string{NameDefault, NameRootCA}, r3, "") // current: new set answered
	r4 := v.mustRecv()
	require.Len(t, secrets(t, r4), 2)
}

// TestStreamNamesChange: a change of names is answered with the new set; an
// unchanged set is not answered again, and several names share a stream.
func TestStreamNamesChange(t *testing.T) {
	e := newEnv(t, true)
	e.src.setEdge("shop", []byte("edge-cert"), []byte("edge-key"))
	v := e.envoy(t)
	v.send([]string{NameRootCA}, nil, "")
	r1 := v.mustRecv()
	require.Contains(t, secrets(t, r1), NameRootCA)

	v.send([]string{NameRootCA, testID, "spiffe://example.org", "shop"}, r1, "")
	r2 := v.mustRecv()
	got := secrets(t, r2)
	require.Len(t, got, 4)
	require.Equal(t, testID, svidOf(t, got[testID]).ID.String())
	require.NotNil(t, got["spiffe://example.org"].GetValidationContext())
	require.Equal(t, []byte("edge-cert"), got["shop"].GetTlsCertificate().GetCertificateChain().GetInlineBytes())

	// Only the edge certificate changes: the stream still gets a push, and
	// a change touching nothing it watches sends nothing.
	e.src.setEdge("shop", []byte("edge-cert-2"), []byte("edge-key-2"))
	r3 := v.mustRecv()
	require.Equal(t, []byte("edge-cert-2"), secrets(t, r3)["shop"].GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	v.send([]string{"shop", NameRootCA, testID, "spiffe://example.org"}, r3, "") // same set, reordered: an ACK
	e.src.setEdge("other", []byte("x"), []byte("y"))
	v.send([]string{NameRootCA}, r3, "")
	r4 := v.mustRecv()
	require.Equal(t, "4", r4.GetVersionInfo())
	require.Len(t, r4.GetResources(), 1)
}

// TestStreamWaitsForSVID: a known resource not yet available is pushed when
// it appears, not refused.
func TestStreamWaitsForSVID(t *testing.T) {
	e := newEnv(t, false)
	v := e.envoy(t)
	v.send([]string{NameDefault}, nil, "")
	s := e.rotate(t)
	r := v.mustRecv()
	require.Equal(t, "1", r.GetVersionInfo())
	require.Equal(t, s.Certificates[0].Raw, svidOf(t, secrets(t, r)[NameDefault]).Certificates[0].Raw)
}

// TestStreamRefusals: each bad request ends the stream with the right code
// and is counted.
func TestStreamRefusals(t *testing.T) {
	many := make([]string, 10000)
	for i := range many {
		many[i] = fmt.Sprintf("name-%d", i)
	}
	tests := []struct {
		name    string
		req     *discoveryv3.DiscoveryRequest
		code    codes.Code
		inMsg   string
		unknown float64
	}{
		{name: "unknown name", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{NameDefault, "nope"}}, code: codes.InvalidArgument, inMsg: `"nope"`, unknown: 1},
		{name: "edge certificate not granted", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{"admin"}}, code: codes.InvalidArgument, inMsg: `"admin"`, unknown: 1},
		{name: "another workload's ID", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{"spiffe://example.org/ns/shop/sa/db"}}, code: codes.PermissionDenied, inMsg: "sa/db"},
		{name: "foreign trust domain", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{"spiffe://evil.org"}}, code: codes.InvalidArgument, inMsg: "evil.org", unknown: 1},
		{name: "10,000 names", req: &discoveryv3.DiscoveryRequest{ResourceNames: many}, code: codes.InvalidArgument, inMsg: "10000 resource names"},
		{name: "wrong type_url", req: &discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", ResourceNames: []string{NameDefault}}, code: codes.InvalidArgument, inMsg: "type_url"},
		{name: "empty name", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{""}}, code: codes.InvalidArgument},
		{name: "huge name", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{strings.Repeat("a", 1<<20)}}, code: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, true)
			v := e.envoy(t)
			v.sendRaw(tt.req)
			_, err := v.recv()
			require.Equal(t, tt.code, status.Code(err), "error: %v", err)
			require.Contains(t, status.Convert(err).Message(), tt.inMsg)
			require.Equal(t, tt.unknown, testutil.ToFloat64(e.metrics.unknown))
			require.Eventually(t, func() bool { return testutil.ToFloat64(e.metrics.streamsOpen) == 0 }, waitFor, time.Millisecond)
		})
	}
}

// TestStreamGarbageAfterSubscribe: garbage on a live stream ends it too.
func TestStreamGarbageAfterSubscribe(t *testing.T) {
	e := newEnv(t, true)
	v := e.envoy(t)
	v.send([]string{NameDefault}, nil, "")
	r1 := v.mustRecv()
	v.sendRaw(&discoveryv3.DiscoveryRequest{TypeUrl: "garbage", ResponseNonce: r1.GetNonce()})
	_, err := v.recv()
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Equal(t, 1.0, testutil.ToFloat64(e.h.metrics.refused.WithLabelValues(reasonInvalid)))
}

// TestStreamAttestationFails: no registration means PermissionDenied and
// nothing else.
func TestStreamAttestationFails(t *testing.T) {
	tests := []struct {
		name  string
		ident identity.Identity
		err   error
	}{
		{name: "no registration", err: identity.ErrNoRegistration},
		{name: "other trust domain", ident: identity.Identity{ID: mustID("spiffe://evil.org/x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, true)
			e.att.ident, e.att.err = tt.ident, tt.err
			v := e.envoy(t)
			v.send([]string{NameDefault}, nil, "")
			_, err := v.recv()
			require.Equal(t, codes.PermissionDenied, status.Code(err))
			_, err = e.client(t).FetchSecrets(context.Background(), &discoveryv3.DiscoveryRequest{ResourceNames: []string{NameDefault}})
			require.Equal(t, codes.PermissionDenied, status.Code(err))
			require.Equal(t, 2.0, testutil.ToFloat64(e.h.metrics.refused.WithLabelValues(reasonAttestation)))
		})
	}
}

// TestStreamManyConcurrent: every one of many streams gets the rotation.
func TestStreamManyConcurrent(t *testing.T) {
	const streams, conns = 200, 4
	e := newEnv(t, true)
	clients := make([]*envoy, streams)
	last := make([]*discoveryv3.DiscoveryResponse, streams)
	for i := range clients {
		clients[i] = e.envoyOn(t, i%conns)
		clients[i].send([]string{NameDefault, NameRootCA}, nil, "")
	}
	for i, v := range clients {
		last[i] = v.mustRecv()
		v.send([]string{NameDefault, NameRootCA}, last[i], "")
	}
	rotated := e.rotate(t)
	rotatedPEM, _, err := rotated.Marshal()
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for _, v := range clients {
		wg.Go(func() {
			r, err := v.stream.Recv()
			if err == nil && r.GetVersionInfo() != "2" {
				err = fmt.Errorf("got version %q", r.GetVersionInfo())
			}
			if err == nil && !slices.ContainsFunc(r.GetResources(), func(a *anypb.Any) bool { return bytes.Contains(a.GetValue(), rotatedPEM) }) {
				err = fmt.Errorf("version 2 does not carry the rotated SVID")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, float64(streams), testutil.ToFloat64(e.metrics.streamsOpen))
	require.Equal(t, float64(2*streams), testutil.ToFloat64(e.metrics.pushes))
}

// TestStreamClientNeverReads: pushes to a client that never reads block in
// flow control; cancelling the client must end every server goroutine
// (goleak in TestMain checks), and other connections keep being served.
func TestStreamClientNeverReads(t *testing.T) {
	e := newEnv(t, true)
	big := []byte(strings.Repeat("x", 256<<10))
	e.src.setEdge("shop", big, big)
	ctx, cancel := context.WithCancel(context.Background())
	stuck := e.client(t)
	for range 20 {
		st, err := stuck.StreamSecrets(ctx)
		require.NoError(t, err)
		require.NoError(t, st.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"shop", NameDefault}}))
	}
	for i := range 8 {
		e.src.setEdge("shop", append([]byte{byte(i)}, big...), big)
	}
	v := e.envoy(t) // another connection is not held up
	v.send([]string{NameDefault}, nil, "")
	v.mustRecv()

	cancel()
	require.Eventually(t, func() bool { return testutil.ToFloat64(e.metrics.streamsOpen) == 1 }, waitFor, time.Millisecond)
}

// TestStreamNACKLoop: an Envoy that rejects every version gets nothing
// resent, however often it says so; only a real change is pushed.
func TestStreamNACKLoop(t *testing.T) {
	const nacks = 500
	e := newEnv(t, true)
	v := e.envoy(t)
	v.send([]string{NameDefault}, nil, "")
	r1 := v.mustRecv()
	for range nacks {
		v.send([]string{NameDefault}, r1, "rejected")
	}
	require.Eventually(t, func() bool { return testutil.ToFloat64(e.metrics.nacks) == nacks }, waitFor, time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(e.metrics.pushes))
	rotated := e.rotate(t)
	r2 := v.mustRecv()
	require.Equal(t, "2", r2.GetVersionInfo())
	require.Equal(t, rotated.Certificates[0].Raw, svidOf(t, secrets(t, r2)[NameDefault]).Certificates[0].Raw)
}

// TestStreamOneNamePerRequest plays an SDS client that is not Envoy: it
// asks for one secret per request on one stream, each request with an
// empty response_nonce, and ACKs what it receives. Both secrets must be
// served, and both again after every rotation.
func TestStreamOneNamePerRequest(t *testing.T) {
	e := newEnv(t, true)
	v := e.envoy(t)

	v.send([]string{NameDefault}, nil, "")
	r1 := v.mustRecv()
	require.Len(t, secrets(t, r1), 1)
	v.send([]string{NameDefault}, r1, "") // ACK

	v.send([]string{NameRootCA}, nil, "") // a second subscription, no nonce
	r2 := v.mustRecv()
	got := secrets(t, r2)
	require.Len(t, got, 2, "the names of the first request stay subscribed")
	require.Contains(t, got, NameDefault)
	require.Contains(t, got, NameRootCA)
	v.send([]string{NameRootCA}, r2, "") // ACK naming only its own secret, as such clients do
	e.waitAcks(t, 1)                     // r1 had no bundle; r2's ACK is the first

	last := r2
	for i := range 3 {
		rotated := e.rotate(t)
		r := v.mustRecv()
		got := secrets(t, r)
		require.Len(t, got, 2, "rotation %d", i+1)
		require.Equal(t, rotated.Certificates[0].Raw, svidOf(t, got[NameDefault]).Certificates[0].Raw, "rotation %d", i+1)
		require.NotNil(t, got[NameRootCA].GetValidationContext())
		require.NotEqual(t, last.GetNonce(), r.GetNonce())
		v.send([]string{NameRootCA}, r, "")
		e.waitAcks(t, int64(i+2))
		last = r
	}
	v.send([]string{NameDefault}, nil, "") // asking again, without a nonce, is answered at once
	require.Len(t, secrets(t, v.mustRecv()), 2)
}

// TestStreamEmptyNamesRefused: a subscription request naming nothing is
// refused with a reason, not left unanswered.
func TestStreamEmptyNamesRefused(t *testing.T) {
	e := newEnv(t, true)
	v := e.envoy(t)
	v.send(nil, nil, "")
	_, err := v.recv()
	require.Equal(t, codes.InvalidArgument, status.Code(err))
}

// waitAcks waits until the handler has recorded n bundle ACKs.
func (e *env) waitAcks(t testing.TB, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return e.acks.n.Load() >= n }, waitFor, time.Millisecond)
}
