package envoy

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// onlyStream returns the one open stream of h.
func onlyStream(t *testing.T, h *Handler) *stream {
	t.Helper()
	h.fan.mu.Lock()
	defer h.fan.mu.Unlock()
	require.Len(t, h.fan.streams, 1)
	return h.fan.streams[0]
}

// TestStreamChangeDuringRequest: a change that lands while the stream's
// goroutine is answering a request (and holds the stream) is not lost: the
// answer carries the old SVID, and the new one follows as soon as the
// request is done.
func TestStreamChangeDuringRequest(t *testing.T) {
	e := newEnv(t, true)
	entered, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	e.src.mu.Lock()
	e.src.afterSVID = func() {
		if first.CompareAndSwap(false, true) {
			close(entered)
			<-release
		}
	}
	old := e.src.svids[mustID(testID)]
	e.src.mu.Unlock()

	v := e.envoy(t)
	v.send([]string{NameDefault}, nil, "")
	<-entered // the first response is being built from the old SVID
	rotated := e.rotate(t)
	s := onlyStream(t, e.h)
	require.Eventually(t, s.changed.Load, waitFor, time.Millisecond, "the fan-out found the stream busy and left the change for it")
	unblock()

	r1 := v.mustRecv()
	require.Equal(t, "1", r1.GetVersionInfo())
	require.Equal(t, old.Certificates[0].Raw, svidOf(t, secrets(t, r1)[NameDefault]).Certificates[0].Raw)
	r2 := v.mustRecv()
	require.Equal(t, "2", r2.GetVersionInfo())
	require.Equal(t, rotated.Certificates[0].Raw, svidOf(t, secrets(t, r2)[NameDefault]).Certificates[0].Raw)
}

// TestStreamDeferredUntilAnswered: once a stream has unackedBudget bytes
// that Envoy has not answered, a change waits for Envoy's answer and is then
// sent on the stream's own goroutine.
func TestStreamDeferredUntilAnswered(t *testing.T) {
	e := newEnv(t, true)
	big := []byte(strings.Repeat("x", unackedBudget))
	e.src.setEdge("shop", big, big)
	v := e.envoy(t)
	v.send([]string{"shop"}, nil, "")
	r1 := v.mustRecv()

	next := append([]byte("2"), big...)
	e.src.setEdge("shop", next, big)
	s := onlyStream(t, e.h)
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.deferred
	}, waitFor, time.Millisecond, "the change must wait for the answer")
	require.Equal(t, 1.0, testutil.ToFloat64(e.metrics.pushes))

	v.send([]string{"shop"}, r1, "") // the ACK frees the budget
	r2 := v.mustRecv()
	require.Equal(t, "2", r2.GetVersionInfo())
	require.Equal(t, next, secrets(t, r2)["shop"].GetTlsCertificate().GetCertificateChain().GetInlineBytes())
}

// TestStreamSlowEnvoyDoesNotDelayOthers: Envoys that stop reading (their
// flow-control window full, every further Send would block) outnumber the
// fan-out's workers three to one, and guess nonces to look current; every
// rotation still reaches a healthy stream. Without the unacked budget the
// workers would block on the second rotation and the healthy stream, last
// in the walk, would never get it.
func TestStreamSlowEnvoyDoesNotDelayOthers(t *testing.T) {
	e := newEnv(t, true)
	e.h.pushWorkers = 2
	big := []byte(strings.Repeat("x", 256<<10))
	e.src.setEdge("shop", big, big)
	names := []string{"shop", NameDefault}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Fixed windows: gRPC's BDP estimation would otherwise grow them until
	// the pushes fit.
	cc, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	stuck := make([]*envoy, 3*e.h.pushWorkers)
	for i := range stuck {
		st, err := secretv3.NewSecretDiscoveryServiceClient(cc).StreamSecrets(ctx)
		require.NoError(t, err)
		stuck[i] = &envoy{t: t, stream: st}
		stuck[i].send(names, nil, "")
		stuck[i].send(names, stuck[i].mustRecv(), "") // ACK, then never read again
	}
	v := e.envoy(t) // opened last, so the workers reach it last
	v.send([]string{NameDefault}, nil, "")
	last := v.mustRecv()
	v.send([]string{NameDefault}, last, "")

	for round := range 4 {
		rotated := e.rotate(t)
		version := strconv.Itoa(round + 2)
		r := v.mustRecv()
		require.Equal(t, version, r.GetVersionInfo())
		require.Equal(t, rotated.Certificates[0].Raw, svidOf(t, secrets(t, r)[NameDefault]).Certificates[0].Raw)
		v.send([]string{NameDefault}, r, "")
		// The walk has passed the stuck streams: answer what they would
		// have been sent, were nonces guessable.
		for _, s := range stuck {
			s.sendRaw(&discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: names, VersionInfo: version, ResponseNonce: version})
		}
	}
}

// TestStreamFanoutRestarts: the watcher stops with the last stream and a
// later stream starts it again.
func TestStreamFanoutRestarts(t *testing.T) {
	e := newEnv(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := e.client(t).StreamSecrets(ctx)
	require.NoError(t, err)
	v1 := &envoy{t: t, stream: st}
	v1.send([]string{NameDefault}, nil, "")
	v1.mustRecv()
	cancel()
	require.Eventually(t, func() bool {
		e.h.fan.mu.Lock()
		defer e.h.fan.mu.Unlock()
		return e.h.fan.stop == nil && len(e.h.fan.streams) == 0
	}, waitFor, time.Millisecond)

	v2 := e.envoy(t)
	v2.send([]string{NameDefault}, nil, "")
	r1 := v2.mustRecv()
	v2.send([]string{NameDefault}, r1, "")
	rotated := e.rotate(t)
	r2 := v2.mustRecv()
	require.Equal(t, "2", r2.GetVersionInfo())
	require.Equal(t, rotated.Certificates[0].Raw, svidOf(t, secrets(t, r2)[NameDefault]).Certificates[0].Raw)
}

// TestStreamNonceSourceFails: no nonce, no response; the stream ends with
// an opaque Internal status.
func TestStreamNonceSourceFails(t *testing.T) {
	e := newEnv(t, true)
	e.h.rand = iotest.ErrReader(errors.New("no entropy"))
	v := e.envoy(t)
	v.send([]string{NameDefault}, nil, "")
	_, err := v.recv()
	require.Equal(t, codes.Internal, status.Code(err))
	require.NotContains(t, status.Convert(err).Message(), "entropy")
}

func TestIsNonce(t *testing.T) {
	s := &stream{nonce: 0xabc123}
	tests := []struct {
		name  string
		nonce string
		want  bool
	}{
		{name: "current", nonce: "abc123", want: true},
		{name: "upper case", nonce: "ABC123"},
		{name: "leading zero", nonce: "0abc123"},
		{name: "empty", nonce: ""},
		{name: "version-like", nonce: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, s.isNonce(tt.nonce))
		})
	}
}

// TestNonceFromRandomSource: nonces come from the random source, not from
// the version, so two streams at version 1 have different nonces.
func TestNonceFromRandomSource(t *testing.T) {
	e := newEnv(t, true)
	e.h.rand = bytes.NewReader([]byte{0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99})
	var nonces []string
	for range 2 {
		v := e.envoy(t)
		v.send([]string{NameDefault}, nil, "")
		r := v.mustRecv()
		require.Equal(t, "1", r.GetVersionInfo())
		nonces = append(nonces, r.GetNonce())
	}
	require.Equal(t, []string{"1122334455667788", "99aabbccddeeff00"}, nonces)
}
