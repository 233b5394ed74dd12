// Package leader runs leader-only work under client-go leader election on a
// Kubernetes Lease. Every replica of the server signs certificates; only the one
// holding the Lease runs the Runners added to it. The package knows nothing of that
// work; in certmesh it is advancing CA rotation (ca), publishing trust bundles
// (ca/k8s), keeping the webhook's caBundle current (sds/inject) and the ingress
// controller's ACME orders (edge/ingress).
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"
)

// DefaultLeaseName is the Lease the replicas contend for.
const DefaultLeaseName = "certmesh-leader"

// Leader-election timing. A crashed leader is replaced within
// LeaseDuration (+ RetryPeriod); a leader that stops cleanly releases the
// Lease and is replaced within RetryPeriod.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Config configures a Leader. Client, Namespace and Identity are
// required; Identity must differ per replica (the pod name).
type Config struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string // the Lease; default certmesh-leader
	Identity  string

	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// KeepLeaseOnStop leaves the Lease held when Run's context ends, as a
	// crash would (tests of handover use it); by default it is released so
	// the next replica takes over at once.
	KeepLeaseOnStop bool
	Clock           clock.Clock
	Logger          *slog.Logger
}

// Runner is work only the leader does. It runs with a context that ends
// when leadership is lost (or Run's context ends) and must return then. An
// error gives up leadership so that another replica can try.
type Runner func(ctx context.Context) error

// Leader runs leader-only work under client-go leader election on a Lease:
// only the replica holding it runs the Runners added with Add.
//
//	l, _ := leader.New(cfg)
//	l.Add("rotation", ca.Run)
//	l.Add("bundles", publisher.Run)
//	go l.Run(ctx)
type Leader struct {
	cfg     Config
	mu      sync.Mutex
	runners map[string]Runner
	names   []string
	leading atomic.Bool
	// leadMu is held while Runners run: two terms never overlap even if a
	// term's callback starts late (its context is then already cancelled).
	leadMu  sync.Mutex
	running atomic.Bool
	terms   atomic.Int64
	// current is the Lease holder as last observed (this replica or another).
	current atomic.Pointer[string]
}

// New checks cfg and fills defaults; it starts nothing.
func New(cfg Config) (*Leader, error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.Identity == "" {
		return nil, errors.New("leader: config: Client, Namespace and Identity are required")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultLeaseName
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewDeadline == 0 {
		cfg.RenewDeadline = DefaultRenewDeadline
	}
	if cfg.RetryPeriod == 0 {
		cfg.RetryPeriod = DefaultRetryPeriod
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Leader{cfg: cfg, runners: map[string]Runner{}}, nil
}

// Add registers leader-only work under a name (for logs). Call before Run.
func (l *Leader) Add(name string, r Runner) error {
	if l.running.Load() {
		return errors.New("leader: Add after Run")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.runners[name]; dup {
		return fmt.Errorf("leader: runner %q added twice", name)
	}
	l.runners[name] = r
	l.names = append(l.names, name)
	return nil
}

// IsLeader reports whether this replica holds the Lease now.
func (l *Leader) IsLeader() bool { return l.leading.Load() }

// Terms counts how often this replica became leader.
func (l *Leader) Terms() int64 { return l.terms.Load() }

// Identity is this replica's name in the Lease.
func (l *Leader) Identity() string { return l.cfg.Identity }

// Current is the Lease holder as this replica last observed it ("" before it
// has read the Lease once).
func (l *Leader) Current() string {
	if p := l.current.Load(); p != nil {
		return *p
	}
	return ""
}

// Run campaigns for the Lease until ctx ends; each time it wins it runs the
// Runners until leadership is lost, then campaigns again.
func (l *Leader) Run(ctx context.Context) error {
	l.running.Store(true)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: l.cfg.Namespace, Name: l.cfg.Name},
		Client:     l.cfg.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.cfg.Identity},
	}
	for ctx.Err() == nil {
		if err := l.term(ctx, lock); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-l.cfg.Clock.After(l.cfg.RetryPeriod):
		}
	}
	return nil
}

// term campaigns once and, if elected, leads until leadership is lost or a
// Runner fails. It returns only after the Runners have returned, so two
// terms of leader-only work never overlap in this process.
func (l *Leader) term(ctx context.Context, lock resourcelock.Interface) error {
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	started := atomic.Bool{}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, Name: l.cfg.Name, ReleaseOnCancel: !l.cfg.KeepLeaseOnStop,
		LeaseDuration: l.cfg.LeaseDuration, RenewDeadline: l.cfg.RenewDeadline, RetryPeriod: l.cfg.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				started.Store(true)
				defer close(done)
				l.lead(lctx, cancel)
			},
			OnStoppedLeading: func() { l.leading.Store(false) },
			OnNewLeader:      func(identity string) { l.current.Store(&identity) },
		},
	})
	if err != nil {
		return fmt.Errorf("leader: election: %w", err)
	}
	le.Run(tctx)
	l.leading.Store(false)
	if started.Load() {
		<-done
	}
	return nil
}

// lead runs every Runner until lctx ends or one fails; a failure cancels
// the others and, by returning, ends this term.
func (l *Leader) lead(lctx context.Context, resign context.CancelFunc) {
	l.leadMu.Lock()
	defer l.leadMu.Unlock()
	if lctx.Err() != nil {
		return
	}
	l.leading.Store(true)
	l.terms.Add(1)
	l.cfg.Logger.Info("became leader", "identity", l.cfg.Identity, "lease", l.cfg.Namespace+"/"+l.cfg.Name)
	l.mu.Lock()
	names := append([]string(nil), l.names...)
	l.mu.Unlock()
	g, gctx := errgroup.WithContext(lctx)
	for _, name := range names {
		r := l.runners[name]
		g.Go(func() error {
			if err := r(gctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		l.cfg.Logger.Error("leader-only work failed; giving up leadership", "error", err)
		resign()
	}
	l.leading.Store(false)
	l.cfg.Logger.Info("stopped leading", "identity", l.cfg.Identity)
}
