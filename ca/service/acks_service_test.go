package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/ca/service"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/ca/wire/ackspb"
)

// currentReport is a report holding the fixture CA's current bundle.
func (f *fixture) currentReport(instance string, lagging, watchers int) wire.AckReport {
	d := wire.BundleDigest(f.ca.Roots())
	return wire.AckReport{Instance: instance, Bundle: hex.EncodeToString(d[:]), Lagging: lagging, Watchers: watchers}
}

func (f *fixture) report(t *testing.T, svid *x509svid.SVID, rep wire.AckReport) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return wire.SendAckReport(ctx, f.conn(t, svid), rep)
}

// TestAckReportRefusals: without a pod's token, only node agents, by their
// SVID over mTLS, with counts in range, may report; every refusal is counted
// by its reason and takes no slot.
func TestAckReportRefusals(t *testing.T) {
	f := newFixture(t)
	node := f.ca.SVID(t, "spiffe://example.org/certmesh/node/n1", time.Hour)
	workload := f.ca.SVID(t, "spiffe://example.org/ns/default/sa/web", time.Hour)
	foreign := catest.New(t, "other.org").SVID(t, "spiffe://other.org/certmesh/node/n1", time.Hour)
	tests := []struct {
		name   string
		svid   *x509svid.SVID
		rep    wire.AckReport
		code   codes.Code
		reason string
	}{
		{name: "workload identity", svid: workload, rep: f.currentReport("w", 0, 1), code: codes.PermissionDenied, reason: "ack_not_agent"},
		{name: "no client certificate", rep: f.currentReport("x", 0, 1), code: codes.PermissionDenied, reason: "ack_no_credential"},
		{name: "node of another trust domain", svid: foreign, rep: f.currentReport("x", 0, 1), code: codes.Unauthenticated, reason: "bad_client_svid"},
		{name: "negative lagging", svid: node, rep: f.currentReport("a", -5, 0), code: codes.InvalidArgument, reason: "bad_ack_report"},
		{name: "negative watchers", svid: node, rep: f.currentReport("a", 0, -1), code: codes.InvalidArgument, reason: "bad_ack_report"},
		{name: "huge watchers", svid: node, rep: f.currentReport("a", 0, wire.MaxAckWatchers+1), code: codes.InvalidArgument, reason: "bad_ack_report"},
		{name: "beyond float precision", svid: node, rep: f.currentReport("a", 0, math.MaxInt64), code: codes.InvalidArgument, reason: "bad_ack_report"},
		{name: "lagging beyond watchers", svid: node, rep: f.currentReport("a", 3, 2), code: codes.InvalidArgument, reason: "bad_ack_report"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(f.metrics.Refused(tt.reason))
			err := f.report(t, tt.svid, tt.rep)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.Equal(t, before+1, testutil.ToFloat64(f.metrics.Refused(tt.reason)), "refusal counted")
			require.Zero(t, f.acks.Agents(), "a refused report takes no slot")
		})
	}
	require.NoError(t, f.report(t, node, f.currentReport("a", 1, 2)))
	require.Equal(t, 1, f.acks.Agents())
}

// TestAckOneSlotPerCaller: a node agent's reports share one slot whatever
// instance they claim, so a caller cannot multiply its weight; the latest
// report is the one the gate counts.
func TestAckOneSlotPerCaller(t *testing.T) {
	f := newFixture(t)
	n1 := f.ca.SVID(t, "spiffe://example.org/certmesh/node/n1", time.Hour)
	n2 := f.ca.SVID(t, "spiffe://example.org/certmesh/node/n2", time.Hour)
	roots := wire.BundleDigest(f.ca.Roots())

	require.NoError(t, f.report(t, n1, f.currentReport("first", 2, 2)))
	require.NoError(t, f.report(t, n1, f.currentReport("second", 1, 3)))
	require.Equal(t, 1, f.acks.Agents(), "two instances of one identity occupy one slot")
	ok, lagging := f.acks.Gate(roots)
	require.False(t, ok)
	require.Equal(t, 1, lagging, "the later report replaced the earlier one")

	require.NoError(t, f.report(t, n2, f.currentReport("other", 0, 5)))
	require.Equal(t, 2, f.acks.Agents())
	require.NoError(t, f.report(t, n1, f.currentReport("first", 0, 2)))
	ok, lagging = f.acks.Gate(roots)
	require.True(t, ok)
	require.Zero(t, lagging)
}

// gatedSigner says when its first Sign has started and holds it until
// release is closed (or 10 s).
type gatedSigner struct {
	service.Signer
	entered chan struct{}
	release chan struct{}
}

func (g *gatedSigner) Sign(p ca.SignParams) (*ca.Leaf, error) {
	select {
	case g.entered <- struct{}{}:
		select {
		case <-g.release:
		case <-time.After(10 * time.Second):
		}
	default:
	}
	return g.Signer.Sign(p)
}

// TestAckReportPassesInterceptorsNotShed: the generated descriptor hands
// Report to the server's interceptor chain (before it, a hand-written one
// skipped the chain altogether). The load shedder passes it on even with
// every signing slot taken: a heartbeat costs no signature, and shedding it
// would make a busy CA forget live agents and open its rotation gate early.
func TestAckReportPassesInterceptorsNotShed(t *testing.T) {
	signer := &gatedSigner{entered: make(chan struct{}), release: make(chan struct{})}
	f := newFixtureWith(t, func(c *service.Config) {
		c.MaxInFlight, c.QueueWait = 1, time.Millisecond
		signer.Signer = c.CA
		c.CA = signer
	})
	node := f.ca.SVID(t, "spiffe://example.org/certmesh/node/n1", time.Hour)
	client := f.dial(t, node)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "")}
	first := make(chan error, 1)
	go func() { _, err := client.CreateCertificate(context.Background(), req); first <- err }()
	select {
	case <-signer.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first signature never started")
	}
	_, err := client.CreateCertificate(context.Background(), req)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "the only signing slot is taken")

	require.NoError(t, f.report(t, node, f.currentReport("a", 0, 1)), "a report is not shed")
	require.Contains(t, f.seen.Methods(), ackspb.BundleAcks_Report_FullMethodName, "Report went through the interceptor chain")
	require.Equal(t, 1, f.acks.Agents())
	close(signer.release)
	require.NoError(t, <-first)
}
