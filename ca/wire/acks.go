package wire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// AckReport is what an agent tells the CA about the trust bundle: which one
// it holds (hex BundleDigest) and how many of its watchers do not hold it
// yet. The CA switches signing to a new root only when every live agent
// holds the bundle with that root and no watcher lags.
type AckReport struct {
	Instance string
	Bundle   string
	Lagging  int
	Watchers int
}

// AckLiveness is how long the CA counts an agent as live after its last
// report: an agent repeats an unchanged report well within it.
const AckLiveness = 30 * time.Second

// ErrBadAckReport: a report's fields are out of range.
var ErrBadAckReport = errors.New("wire: malformed bundle acknowledgement report")

// maxInstance bounds an instance name, which the CA keeps per agent.
const maxInstance = 64

// Validate checks what the CA stores: an instance name of 1 to 64 bytes and
// a bundle of 64 characters (a hex BundleDigest). Counts are not checked:
// the CA clamps them when it adds them up.
func (r AckReport) Validate() error {
	if len(r.Instance) == 0 || len(r.Instance) > maxInstance {
		return fmt.Errorf("%w: instance of %d bytes (1 to %d)", ErrBadAckReport, len(r.Instance), maxInstance)
	}
	if len(r.Bundle) != 64 {
		return fmt.Errorf("%w: bundle of %d characters (64 hex digits)", ErrBadAckReport, len(r.Bundle))
	}
	return nil
}

// The acknowledgement service is tiny and private to certmesh, so it uses
// google.protobuf.Struct messages with a hand-written service descriptor
// rather than a generated one.
const (
	ackService = "certmesh.v1.BundleAcks"
	ackMethod  = "/" + ackService + "/Report"
)

// Field names of a report in its Struct message.
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

// RegisterAcks adds the acknowledgement service to g; handle serves it.
func RegisterAcks(g grpc.ServiceRegistrar, handle AckHandler) {
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: ackService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Report", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(structpb.Struct)
			if err := dec(in); err != nil {
				return nil, err
			}
			if err := handle(ctx, decodeAckReport(in)); err != nil {
				return nil, err
			}
			return &emptypb.Empty{}, nil
		}}},
	}, handle)
}

// SendAckReport is the agent side of the service.
func SendAckReport(ctx context.Context, conn grpc.ClientConnInterface, rep AckReport) error {
	in, err := encodeAckReport(rep)
	if err != nil {
		return err
	}
	return conn.Invoke(ctx, ackMethod, in, new(emptypb.Empty))
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

func decodeAckReport(in *structpb.Struct) AckReport {
	f := in.GetFields()
	return AckReport{
		Instance: f[fieldInstance].GetStringValue(), Bundle: f[fieldBundle].GetStringValue(),
		Lagging: int(f[fieldLagging].GetNumberValue()), Watchers: int(f[fieldWatchers].GetNumberValue()),
	}
}
