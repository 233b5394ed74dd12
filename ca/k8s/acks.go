package k8s

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca/service"
)

// Every replica signs and serves agents, but only the leader drives CA
// rotation, and its rotation gate must count the agents connected to every
// replica. So each replica publishes a summary of its own AckRegistry
// (service.AckSummary: per bundle digest, how many agents hold it and how
// many of their watchers lag) and the leader adds the fresh ones to its own.
//
// The summary rides on one coordination.k8s.io Lease per replica,
// certmesh-acks-<identity> (see ackLeaseName), as JSON in an annotation:
//   - a Lease is Kubernetes' heartbeat object: holderIdentity, renewTime and
//     leaseDurationSeconds say who wrote it, when, and for how long it holds,
//     and `kubectl get leases` shows it;
//   - a write every few seconds to a ConfigMap would wake every ConfigMap
//     informer of the namespace (the issuers ConfigMap's, for one); Leases
//     are watched by nothing else of certmesh;
//   - the Role already grants Leases for leader election.
//
// The summary is small (at most service.MaxSummaryBundles digests, about
// 130 bytes each), far below the annotation size limit.
const (
	AckLeasePrefix = "certmesh-acks-"
	// AckSummaryKey is both the label that selects the summaries and the
	// annotation that holds one; the label's value is the format version.
	AckSummaryKey     = "certmesh.io/ack-summary"
	AckSummaryVersion = "v1"
	// DefaultAckPeriod is how often a replica checks whether its summary
	// changed; it writes only then, or when the summary is half-way stale.
	DefaultAckPeriod = 5 * time.Second
	// ackStaleFactor: a summary not renewed within StaleAfter = factor ×
	// Period is ignored by the gate.
	ackStaleFactor = 3
	// ackCollectFactor: a summary stale for this many StaleAfter is left by
	// a dead replica (a crash skips its clean delete) and is deleted.
	ackCollectFactor = 20
	// ackStopTimeout bounds the delete of the own summary on a clean stop.
	ackStopTimeout = 5 * time.Second
	// ackMaxCollect bounds the deletes of dead summaries per period.
	ackMaxCollect = 10
)

// ErrBadAckSummaryLease: another replica's summary Lease cannot be read; the
// gate ignores it (as it would an absent one) and status shows why.
var ErrBadAckSummaryLease = errors.New("k8s: unreadable acknowledgement summary")

// AckSource is this replica's own view of its agents; *service.AckRegistry
// satisfies it.
type AckSource interface {
	Summary() service.AckSummary
	Gate(roots [32]byte) (ok bool, lagging int)
}

var _ AckSource = (*service.AckRegistry)(nil)

// AckExchangeConfig configures an AckExchange. Client, Namespace, Identity
// and Local are required; Identity must differ per replica (the pod name),
// as for the Leader.
type AckExchangeConfig struct {
	Client    kubernetes.Interface
	Namespace string
	Identity  string
	Local     AckSource
	// Period is how often the own summary is checked (default 5s).
	// StaleAfter is how long another replica's summary counts after it
	// last changed (default 3 × Period). All replicas should agree on both.
	Period, StaleAfter time.Duration
	// KeepOnStop leaves the own summary behind when Run ends, as a crash
	// would (tests of staleness use it).
	KeepOnStop bool
	Clock      clock.Clock
	Logger     *slog.Logger
}

// AckExchange publishes this replica's acknowledgement summary and answers
// the rotation gate for the whole cluster: the local registry plus every
// other replica's fresh summary.
type AckExchange struct {
	cfg  AckExchangeConfig
	name string // the own Lease

	mu        sync.Mutex
	peers     map[string]*ackPeer // by Lease name, without the own
	hasSynced func() bool         // set by Run once the informer exists
	warned    bool                // "not synced" was logged

	// Written only by Run's goroutine.
	own     *coordinationv1.Lease // as last written (nil: Get first)
	wrote   string                // the summary JSON last written
	wroteAt time.Time
}

// NewAckExchange checks cfg and fills defaults; it starts nothing.
func NewAckExchange(cfg AckExchangeConfig) (*AckExchange, error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.Identity == "" || cfg.Local == nil {
		return nil, errors.New("k8s: ack exchange config: Client, Namespace, Identity and Local are required")
	}
	name := ackLeaseName(cfg.Identity)
	if cfg.Period < 0 || cfg.StaleAfter < 0 {
		return nil, errors.New("k8s: ack exchange config: Period and StaleAfter must not be negative")
	}
	if cfg.Period == 0 {
		cfg.Period = DefaultAckPeriod
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = ackStaleFactor * cfg.Period
	}
	if cfg.StaleAfter < 2*cfg.Period {
		return nil, fmt.Errorf("k8s: ack exchange config: StaleAfter %v must be at least twice Period %v, or live replicas look dead", cfg.StaleAfter, cfg.Period)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &AckExchange{cfg: cfg, name: name, peers: map[string]*ackPeer{}}, nil
}

// ackLeaseName is AckLeasePrefix + identity when that is a valid object
// name (a pod name always is). Any other identity (the hostname of a
// replica run outside a pod, say) is made one: lower-cased, other
// characters replaced, shortened, and a hash of the identity appended so
// that two identities never share a summary.
func ackLeaseName(identity string) string {
	name := AckLeasePrefix + identity
	if len(validation.IsDNS1123Subdomain(name)) == 0 {
		return name
	}
	clean := []byte(strings.ToLower(identity))
	for i, c := range clean {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			clean[i] = '-'
		}
	}
	sum := sha256.Sum256([]byte(identity))
	return AckLeasePrefix + strings.Trim(string(clean[:min(len(clean), 40)]), "-") + "-" + hex.EncodeToString(sum[:5])
}

// LeaseName is the Lease this replica's summary is written to.
func (x *AckExchange) LeaseName() string { return x.name }

// Run watches the other replicas' summaries and keeps the own one current
// until ctx ends; then it deletes the own one (unless KeepOnStop), so the
// leader stops counting this replica at once. Apiserver errors are logged
// and retried each Period; Run returns an error only if it cannot start.
func (x *AckExchange) Run(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(x.cfg.Client, 0, informers.WithNamespace(x.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = AckSummaryKey }))
	inf := f.Coordination().V1().Leases().Informer()
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { x.observeObject(o) },
		UpdateFunc: func(_, o any) { x.observeObject(o) },
		DeleteFunc: func(o any) { x.forgetObject(o) },
	})
	if err != nil {
		return fmt.Errorf("k8s: watch acknowledgement summaries: %w", err)
	}
	x.mu.Lock()
	x.hasSynced = reg.HasSynced
	x.mu.Unlock()
	f.Start(ctx.Done())
	defer f.Shutdown()
	defer x.stop()
	for {
		if err := x.publish(ctx); err != nil && ctx.Err() == nil {
			x.cfg.Logger.Warn("publish acknowledgement summary; will retry", "lease", x.name, "error", err)
		}
		x.collect(ctx)
		t := x.cfg.Clock.NewTimer(x.cfg.Period)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// needsWrite decides whether the summary is written now: it changed, it was
// never written, or half its staleness bound has passed (the next check,
// one Period later, would otherwise risk letting it go stale).
func (x *AckExchange) needsWrite(now time.Time, body string) bool {
	return x.own == nil || body != x.wrote || now.Sub(x.wroteAt) >= x.cfg.StaleAfter/2
}

// publish writes the own summary if needsWrite says so.
func (x *AckExchange) publish(ctx context.Context) error {
	b, err := json.Marshal(x.cfg.Local.Summary())
	if err != nil {
		return fmt.Errorf("k8s: encode acknowledgement summary: %w", err)
	}
	now := x.cfg.Clock.Now()
	if !x.needsWrite(now, string(b)) {
		return nil
	}
	// Two tries: the first may find the own Lease changed or gone (a
	// previous process of the same pod, an operator's delete).
	for range 2 {
		if err = x.write(ctx, string(b), now); err == nil {
			x.wrote, x.wroteAt = string(b), now
			return nil
		}
		x.own = nil
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && !apierrors.IsAlreadyExists(err) {
			break
		}
	}
	return err
}

// write creates or updates the own Lease with body as of now.
func (x *AckExchange) write(ctx context.Context, body string, now time.Time) error {
	leases := x.cfg.Client.CoordinationV1().Leases(x.cfg.Namespace)
	if x.own == nil {
		got, err := leases.Get(ctx, x.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			created, cerr := leases.Create(ctx, x.lease(nil, body, now), metav1.CreateOptions{})
			if cerr != nil {
				return fmt.Errorf("k8s: create acknowledgement summary: %w", cerr)
			}
			x.own = created
			return nil
		}
		if err != nil {
			return fmt.Errorf("k8s: read acknowledgement summary: %w", err)
		}
		x.own = got
	}
	updated, err := leases.Update(ctx, x.lease(x.own, body, now), metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("k8s: update acknowledgement summary: %w", err)
	}
	x.own = updated
	return nil
}

// lease is the own Lease carrying body, renewed at now: a copy of base
// (keeping its resourceVersion and anything others added), or a new one.
func (x *AckExchange) lease(base *coordinationv1.Lease, body string, now time.Time) *coordinationv1.Lease {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: x.name, Namespace: x.cfg.Namespace}}
	if base != nil {
		l = base.DeepCopy()
	}
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Labels[AckSummaryKey] = AckSummaryVersion
	l.Labels[ManagedByLabel] = ManagedByValue
	l.Annotations[AckSummaryKey] = body
	secs := int32(min(math.Ceil(x.cfg.StaleAfter.Seconds()), math.MaxInt32))
	renew := metav1.NewMicroTime(now)
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &x.cfg.Identity, &secs, &renew
	if l.Spec.AcquireTime == nil {
		l.Spec.AcquireTime = &renew
	}
	return l
}

// stop deletes the own summary after Run's context ended: the leader then
// stops counting this replica's agents at once instead of after StaleAfter
// (they are reconnecting to other replicas and will report there).
func (x *AckExchange) stop() {
	if x.cfg.KeepOnStop {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), ackStopTimeout)
	defer cancel()
	err := x.cfg.Client.CoordinationV1().Leases(x.cfg.Namespace).Delete(ctx, x.name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		x.cfg.Logger.Warn("delete acknowledgement summary on stop; the leader ignores it once stale", "lease", x.name, "error", err)
	}
}

// collect deletes summaries that dead replicas left behind (a crash skips
// the delete in stop; a Deployment's pods never come back under the same
// name). The delete is conditional on the resourceVersion seen, so a
// replica that is merely slow and renews meanwhile keeps its summary.
func (x *AckExchange) collect(ctx context.Context) {
	now := x.cfg.Clock.Now()
	x.mu.Lock()
	var dead []ackPeer
	for _, p := range x.peers {
		if len(dead) < ackMaxCollect && now.Sub(p.observed) > ackCollectFactor*x.cfg.StaleAfter {
			dead = append(dead, *p)
		}
	}
	x.mu.Unlock()
	for _, p := range dead {
		rv := p.rv
		err := x.cfg.Client.CoordinationV1().Leases(x.cfg.Namespace).Delete(ctx, p.lease,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		switch {
		case err == nil:
			x.cfg.Logger.Info("deleted the acknowledgement summary of a gone replica", "lease", p.lease, "identity", p.identity)
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		default:
			x.cfg.Logger.Warn("delete the acknowledgement summary of a gone replica", "lease", p.lease, "error", err)
		}
	}
}
