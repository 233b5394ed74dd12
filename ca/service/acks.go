package service

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/utils/clock"
)

// AckReport is what an agent tells the CA about the trust bundle: which one
// it holds (hex ca.BundleDigest) and how many of its watchers do not hold it
// yet. The CA switches signing to a new root only when every live agent
// holds the bundle with that root and no watcher lags.
type AckReport struct {
	Instance string
	Bundle   string
	Lagging  int
	Watchers int
}

// The acknowledgement service is tiny and private to certmesh, so it uses
// google.protobuf.Struct messages with a hand-written service descriptor
// rather than a generated one.
const (
	ackService = "certmesh.v1.BundleAcks"
	ackMethod  = "/" + ackService + "/Report"
	// AckLiveness is how long an agent counts as live after its last report.
	AckLiveness = 30 * time.Second
)

// AckRegistry collects agents' reports and answers the rotation gate.
type AckRegistry struct {
	svc   *Service
	clock clock.PassiveClock

	mu      sync.Mutex
	reports map[string]ackEntry
}

type ackEntry struct {
	AckReport
	seen time.Time
}

// NewAckRegistry serves reports authenticated as the signing service does.
func (s *Service) NewAckRegistry() *AckRegistry {
	return &AckRegistry{svc: s, clock: s.cfg.Clock, reports: map[string]ackEntry{}}
}

// Register adds the acknowledgement service to g.
func (r *AckRegistry) Register(g *grpc.Server) {
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: ackService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Report", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(structpb.Struct)
			if err := dec(in); err != nil {
				return nil, err
			}
			return r.report(ctx, in)
		}}},
	}, r)
}

func (r *AckRegistry) report(ctx context.Context, in *structpb.Struct) (*emptypb.Empty, error) {
	caller, err := r.svc.authenticate(ctx)
	if err != nil {
		return nil, r.svc.refuse(ctx, err)
	}
	f := in.GetFields()
	rep := AckReport{
		Instance: f["instance"].GetStringValue(), Bundle: f["bundle"].GetStringValue(),
		Lagging: int(f["lagging"].GetNumberValue()), Watchers: int(f["watchers"].GetNumberValue()),
	}
	if len(rep.Instance) == 0 || len(rep.Instance) > 64 || len(rep.Bundle) != 64 {
		return nil, r.svc.refuse(ctx, errBadAckReport)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune()
	if len(r.reports) >= maxAckAgents {
		return nil, r.svc.refuse(ctx, errTooManyAgents)
	}
	r.reports[caller.ID.String()+"#"+rep.Instance] = ackEntry{AckReport: rep, seen: r.clock.Now()}
	return &emptypb.Empty{}, nil
}

// maxAckAgents bounds the registry's memory against a flood of instances.
const maxAckAgents = 100000

func (r *AckRegistry) prune() {
	now := r.clock.Now()
	for k, e := range r.reports {
		if now.Sub(e.seen) > AckLiveness {
			delete(r.reports, k)
		}
	}
}

// Gate says whether every live agent holds the bundle with the given roots
// and how many watchers (or agents, when an agent's own bundle is behind)
// still lag. It is the CA's rotation gate.
func (r *AckRegistry) Gate(roots [32]byte) (ok bool, lagging int) {
	want := hex.EncodeToString(roots[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune()
	for _, e := range r.reports {
		switch {
		case e.Bundle != want:
			lagging += max(e.Watchers, 1)
		default:
			lagging += e.Lagging
		}
	}
	return lagging == 0, lagging
}

// Agents is how many live agents have reported.
func (r *AckRegistry) Agents() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune()
	return len(r.reports)
}

// SendAckReport is the agent side of the service.
func SendAckReport(ctx context.Context, conn grpc.ClientConnInterface, rep AckReport) error {
	in, err := structpb.NewStruct(map[string]any{
		"instance": rep.Instance, "bundle": rep.Bundle, "lagging": rep.Lagging, "watchers": rep.Watchers,
	})
	if err != nil {
		return fmt.Errorf("service: ack report: %w", err)
	}
	return conn.Invoke(ctx, ackMethod, in, new(emptypb.Empty))
}
