package wire

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/certmesh/certmesh/ca/wire/ackspb"
)

// AckReport is what a node agent tells the CA about the trust bundle: which
// one it holds (hex BundleDigest) and how many of its watchers do not hold
// it yet. The CA switches signing to a new root only when every live agent
// holds the bundle with that root and no watcher lags.
type AckReport struct {
	Instance string
	Bundle   string
	Lagging  int
	Watchers int

	// malformed says what decoding found wrong (a missing field, a count
	// that is not a whole number in range); Validate reports it, so that
	// the server can authenticate the caller before it judges the report.
	malformed string
}

// AckLiveness is how long the CA counts an agent as live after its last
// report: an agent repeats an unchanged report well within it.
const AckLiveness = 30 * time.Second

// MaxAckWatchers bounds the watchers one agent may report: far more than
// the streams one node serves, small enough that the CA's sums over any
// number of agents cannot overflow.
const MaxAckWatchers = 1 << 20

// ErrBadAckReport: a report's fields are missing or out of range.
var ErrBadAckReport = errors.New("wire: malformed bundle acknowledgement report")

// maxInstance bounds an instance name.
const maxInstance = 64

// Validate checks a report before the CA counts it: an instance name of 1
// to 64 bytes, a bundle of 64 lowercase hex digits (a BundleDigest), 0 ≤
// watchers ≤ MaxAckWatchers and 0 ≤ lagging ≤ watchers. A negative count
// would cancel other agents' lag and open the rotation gate early.
func (r AckReport) Validate() error {
	switch {
	case r.malformed != "":
		return fmt.Errorf("%w: %s", ErrBadAckReport, r.malformed)
	case len(r.Instance) == 0 || len(r.Instance) > maxInstance:
		return fmt.Errorf("%w: instance of %d bytes (1 to %d)", ErrBadAckReport, len(r.Instance), maxInstance)
	case !isDigest(r.Bundle):
		return fmt.Errorf("%w: bundle %.80q is not 64 lowercase hex digits", ErrBadAckReport, r.Bundle)
	case r.Watchers < 0 || r.Watchers > MaxAckWatchers:
		return fmt.Errorf("%w: watchers %d (0 to %d)", ErrBadAckReport, r.Watchers, MaxAckWatchers)
	case r.Lagging < 0 || r.Lagging > r.Watchers:
		return fmt.Errorf("%w: lagging %d (0 to watchers, %d)", ErrBadAckReport, r.Lagging, r.Watchers)
	}
	return nil
}

// isDigest: exactly what hex.EncodeToString makes of a SHA-256, so that
// two spellings of one bundle cannot count as two bundles.
func isDigest(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == 32 && hex.EncodeToString(b) == s
}

// Field names of a report in its Struct message (ackspb/acks.proto).
const (
	fieldInstance = "instance"
	fieldBundle   = "bundle"
	fieldLagging  = "lagging"
	fieldWatchers = "watchers"
)

// AckHandler receives one decoded report. The report is not validated yet:
// the handler authenticates the caller first, then calls Validate. An error
// it returns is the call's status.
type AckHandler func(ctx context.Context, rep AckReport) error

// ackServer serves certmesh.v1.BundleAcks with the generated descriptor, so
// the gRPC server's interceptors run on Report as on any other method.
type ackServer struct {
	ackspb.UnimplementedBundleAcksServer
	handle AckHandler
}

func (s ackServer) Report(ctx context.Context, in *structpb.Struct) (*emptypb.Empty, error) {
	if err := s.handle(ctx, decodeAckReport(in)); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// RegisterAcks adds the acknowledgement service to g; handle serves it.
func RegisterAcks(g grpc.ServiceRegistrar, handle AckHandler) {
	ackspb.RegisterBundleAcksServer(g, ackServer{handle: handle})
}

// SendAckReport is the agent side of the service.
func SendAckReport(ctx context.Context, conn grpc.ClientConnInterface, rep AckReport) error {
	in, err := encodeAckReport(rep)
	if err != nil {
		return err
	}
	_, err = ackspb.NewBundleAcksClient(conn).Report(ctx, in)
	return err
}

func encodeAckReport(rep AckReport) (*structpb.Struct, error) {
	in, err := structpb.NewStruct(map[string]any{
		fieldInstance: rep.Instance, fieldBundle: rep.Bundle, fieldLagging: rep.Lagging, fieldWatchers: rep.Watchers,
	})
	if err != nil {
		return nil, fmt.Errorf("wire: ack report: %w", err)
	}
	return in, nil
}

// decodeAckReport reads a report; what it cannot read is left for Validate.
func decodeAckReport(in *structpb.Struct) AckReport {
	f := in.GetFields()
	rep := AckReport{Instance: f[fieldInstance].GetStringValue(), Bundle: f[fieldBundle].GetStringValue()}
	var bad []string
	for _, c := range []struct {
		name string
		dst  *int
	}{{fieldLagging, &rep.Lagging}, {fieldWatchers, &rep.Watchers}} {
		n, ok := wholeCount(f[c.name])
		if !ok {
			bad = append(bad, c.name)
		}
		*c.dst = n
	}
	if len(bad) > 0 {
		rep.malformed = fmt.Sprintf("%v not a whole number in [0, %d]", bad, MaxAckWatchers)
	}
	return rep
}

// wholeCount converts a Struct number to a count, refusing what is not a
// whole number in [0, MaxAckWatchers] (NaN, ±Inf, 1.5, -5, 1e300, a string,
// nothing) before the conversion, which is undefined out of range.
func wholeCount(v *structpb.Value) (int, bool) {
	n, ok := v.GetKind().(*structpb.Value_NumberValue)
	if !ok {
		return 0, false
	}
	x := n.NumberValue
	if !(x >= 0 && x <= MaxAckWatchers) || x != math.Trunc(x) {
		return 0, false
	}
	return int(x), true
}
