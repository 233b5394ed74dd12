package service

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/ca/wire"
)

// Load shedding: at most MaxInFlight signing requests run at once; others
// wait up to QueueWait for a slot and are then refused with
// ResourceExhausted and a retry-after-ms trailer, so a start storm slows
// down instead of piling up goroutines and memory until the server falls over.
const (
	DefaultMaxInFlight = 64
	DefaultQueueWait   = 2 * time.Second
	retryAdvice        = 500 * time.Millisecond
)

// limiter is a counting semaphore with a bounded wait.
type limiter struct {
	slots chan struct{}
	wait  time.Duration
}

func newLimiter(n int, wait time.Duration) *limiter {
	return &limiter{slots: make(chan struct{}, n), wait: wait}
}

// acquire takes a slot or gives up after the queue wait (or ctx's end).
func (l *limiter) acquire(ctx context.Context) bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (l *limiter) release() { <-l.slots }

// shedded is methods that cost a signature and so are limited.
var shedded = map[string]bool{
	"/istio.v1.auth.IstioCertificateService/CreateCertificate": true,
	"/SpiffeWorkloadAPI/FetchJWTSVID":                          true,
}

// UnaryShedder returns the interceptor that applies the limit.
func (s *Service) UnaryShedder() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !shedded[info.FullMethod] {
			return handler(ctx, req)
		}
		if !s.limit.acquire(ctx) {
			s.cfg.Metrics.refused.WithLabelValues("overloaded").Inc()
			_ = grpc.SetTrailer(ctx, metadata.Pairs(wire.RetryAfterKey, strconv.FormatInt(retryAdvice.Milliseconds(), 10)))
			return nil, status.Error(codes.ResourceExhausted, "CA is busy; retry later")
		}
		defer s.limit.release()
		return handler(ctx, req)
	}
}
