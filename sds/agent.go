package sds

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"k8s.io/utils/clock"
)

// Config configures an Agent.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// ServerAddr is the CA's gRPC address.
	ServerAddr string
	// TrustBundle is the bootstrap trust: roots that authenticate the CA
	// server before the agent has streamed the live bundle.
	TrustBundle []*x509.Certificate
	// Credential proves the agent to the CA the first time; later renewals
	// use the agent's own SVID over mTLS.
	Credential Credential
	// Workloads are the registered identities this agent keeps SVIDs for
	// on behalf of local workloads (node mode), at start; SetWorkloads
	// changes them while it runs. Empty in workload mode, where the agent
	// serves its own identity.
	Workloads []spiffeid.ID
	// WorkloadOn, when set, says whether a workload of Workloads may be
	// served on the node this agent proved to be (its own SVID's ID); the
	// others are skipped, so that one registrations file, scoped per node,
	// can be handed to every node's agent (identity.Placement).
	WorkloadOn func(workload, node spiffeid.ID) bool
	// SVIDTTL is the lifetime asked for (zero: the CA's default).
	SVIDTTL time.Duration
	// MaxInFlight bounds the certificate requests the agent has at the CA
	// at once (default DefaultMaxInFlight). A start with thousands of
	// workloads then queues in the agent, where waiting costs nothing,
	// rather than in the CA's shedder and on the HTTP/2 stream limit, where
	// each request's 10 s deadline ran out while it waited (and was retried
	// with backoff).
	MaxInFlight int
	// Edge, if set, provides ACME edge certificates to serve over SDS.
	Edge EdgeSource

	Clock      clock.Clock
	Rand       io.Reader      // key generation; default crypto/rand
	Jitter     func() float64 // uniform in [0, 1); default math/rand/v2
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultMaxInFlight is half the CA's default limit (ca/service
// DefaultMaxInFlight): enough to keep the CA's cores busy, not enough for
// one agent to be shed.
const DefaultMaxInFlight = 32

// Credential is what the agent presents to the CA when it has no SVID yet.
type Credential interface {
	// Token returns the bearer token to send. ok is false when the
	// credential cannot be used again (a spent join token).
	Token() (token string, ok bool)
}

// JoinToken is a one-time credential: used once, then the agent renews with
// its SVID. If that SVID ever expires, a new join token is needed.
type JoinToken struct {
	mu    sync.Mutex
	value string
	used  bool
}

// NewJoinToken wraps a join token.
func NewJoinToken(v string) *JoinToken { return &JoinToken{value: v} }

// Token implements Credential.
func (j *JoinToken) Token() (string, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.used || j.value == "" {
		return "", false
	}
	j.used = true
	return j.value, true
}

// EdgeSource provides edge certificates by name; edge.Manager satisfies it.
type EdgeSource interface {
	EdgeCertificate(name string) (certPEM, keyPEM []byte, ok bool)
	Changed() <-chan struct{}
}

// Agent keeps SVIDs and bundles fresh and is the Source of the SDS and
// Workload API handlers. Safe for concurrent use.
type Agent struct {
	cfg     Config
	client  *caClient
	metrics *metrics
	work    chan func() // renewals, for the MaxInFlight workers

	bundle    atomic.Pointer[x509bundle.Bundle]
	jwtBundle atomic.Pointer[jwtbundle.Bundle]

	jwts jwtCache
	// acks tracks which bundle each local watcher holds; instance names
	// this agent process in its reports to the CA.
	acks     *watcherAcks
	instance string

	mu    sync.RWMutex
	own   *x509svid.SVID
	svids map[spiffeid.ID]*x509svid.SVID
	// wanted are the workloads to keep SVIDs for (Workloads, then
	// SetWorkloads); true marks one WorkloadOn puts on other nodes.
	wanted map[spiffeid.ID]bool

	slots workloadSlots // the goroutines keeping wanted's SVIDs

	changeMu sync.Mutex
	changed  chan struct{}
	ready    chan struct{}
	readyOne sync.Once
	isReady  atomic.Bool // ready is closed
	// readyMu guards missing: the workloads the last scan found without an
	// SVID (checkReady).
	readyMu sync.Mutex
	missing []spiffeid.ID
}

// New checks cfg; it does not contact the CA or start goroutines.
func New(cfg Config) (*Agent, error) {
	if cfg.TrustDomain.IsZero() || cfg.ServerAddr == "" || cfg.Credential == nil {
		return nil, errors.New("sds: config: TrustDomain, ServerAddr and Credential are required")
	}
	if len(cfg.TrustBundle) == 0 {
		return nil, errors.New("sds: config: a bootstrap TrustBundle is required to authenticate the CA")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Jitter == nil {
		cfg.Jitter = mrand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	inst := make([]byte, 8)
	if _, err := io.ReadFull(cfg.Rand, inst); err != nil {
		return nil, fmt.Errorf("sds: instance id: %w", err)
	}
	a := &Agent{cfg: cfg, svids: map[spiffeid.ID]*x509svid.SVID{}, wanted: map[spiffeid.ID]bool{},
		changed: make(chan struct{}), ready: make(chan struct{}),
		metrics: newMetrics(cfg.Registerer), acks: newWatcherAcks(), instance: hex.EncodeToString(inst),
		work: make(chan func())}
	for _, id := range cfg.Workloads {
		a.wanted[id] = false
	}
	a.bundle.Store(x509bundle.FromX509Authorities(cfg.TrustDomain, cfg.TrustBundle))
	a.jwtBundle.Store(jwtbundle.New(cfg.TrustDomain))
	client, err := newCAClient(cfg.ServerAddr, cfg.TrustDomain, bundleSource{a})
	if err != nil {
		return nil, err
	}
	a.client = client
	return a, nil
}

// Run keeps everything fresh until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	defer a.client.close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { a.watchBundles(ctx); return nil })
	g.Go(func() error { a.reportAcks(ctx); return nil })
	a.runWorkers(ctx, g)
	g.Go(func() error { a.maintain(ctx, a.ownSlot()); return nil })
	a.startSlots(ctx)
	if a.cfg.Edge != nil {
		g.Go(func() error { a.forwardEdge(ctx); return nil })
	}
	err := g.Wait()
	a.slots.wait()
	return err
}

// Ready is closed once the agent holds its own SVID and every workload's.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// checkReady closes Ready when nothing is missing any more.
//
// It runs after every SVID obtained, so it must not scan every workload
// each time: that made a start with N workloads O(N²) — a quarter of the
// agent's CPU at 5,000. Once ready it returns at once (Ready does not go
// back). Before, the workloads a scan found missing are kept as a hint:
// while one of them is still missing the agent is not ready, and only when
// all are filled does a new scan decide. Each workload leaves the hint once,
// so a start costs a few scans, not one per SVID.
func (a *Agent) checkReady() {
	if a.isReady.Load() {
		return
	}
	a.readyMu.Lock()
	defer a.readyMu.Unlock()
	a.mu.RLock()
	done := a.own != nil && !a.stillMissingLocked()
	if done {
		a.missing = a.missingLocked()
		done = len(a.missing) == 0
	}
	a.mu.RUnlock()
	if done {
		a.readyOne.Do(func() { a.isReady.Store(true); close(a.ready) })
	}
}

// stillMissingLocked drops from the hint the workloads no longer missing
// and says whether one still is. Callers hold readyMu and mu.
func (a *Agent) stillMissingLocked() bool {
	for len(a.missing) > 0 {
		if a.isMissingLocked(a.missing[len(a.missing)-1]) {
			return true
		}
		a.missing = a.missing[:len(a.missing)-1]
	}
	return false
}

// missingLocked scans for the workloads to serve here without an SVID.
func (a *Agent) missingLocked() []spiffeid.ID {
	var out []spiffeid.ID
	for id := range a.wanted {
		if a.isMissingLocked(id) {
			out = append(out, id)
		}
	}
	return out
}

func (a *Agent) isMissingLocked(id spiffeid.ID) bool {
	elsewhere, wanted := a.wanted[id]
	_, held := a.svids[id]
	return wanted && !elsewhere && !held
}

// notify wakes every watcher: SDS streams and Workload API streams re-read
// what they serve and push only what changed.
func (a *Agent) notify() {
	a.changeMu.Lock()
	close(a.changed)
	a.changed = make(chan struct{})
	a.changeMu.Unlock()
}

// Changed is closed at the next change of any SVID, bundle or edge certificate.
func (a *Agent) Changed() <-chan struct{} {
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	return a.changed
}

// NodeID waits until the agent holds its own SVID and returns its ID: the
// identity it proved with its join token, which local attestation is scoped
// to. It fails only when ctx ends first.
func (a *Agent) NodeID(ctx context.Context) (spiffeid.ID, error) {
	for a.waitForOwn(ctx) {
		if own, ok := a.validOwn(); ok {
			return own.ID, nil
		}
	}
	return spiffeid.ID{}, ctx.Err()
}

// ServedWorkloads is how many workloads the agent keeps SVIDs for: those of
// Workloads (or SetWorkloads) that WorkloadOn places on its node. It is
// final for the current set once Ready is closed.
func (a *Agent) ServedWorkloads() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	n := 0
	for _, elsewhere := range a.wanted {
		if !elsewhere {
			n++
		}
	}
	return n
}

// TrustDomain is the agent's trust domain.
func (a *Agent) TrustDomain() spiffeid.TrustDomain { return a.cfg.TrustDomain }

// X509Bundle is the current trust bundle.
func (a *Agent) X509Bundle() *x509bundle.Bundle { return a.bundle.Load() }

// JWTBundle is the current JWT bundle.
func (a *Agent) JWTBundle() *jwtbundle.Bundle { return a.jwtBundle.Load() }

// X509SVID returns the SVID held for id — a workload's, or the agent's own —
// unless it has expired: an expired SVID is never served.
func (a *Agent) X509SVID(id spiffeid.ID) (*x509svid.SVID, bool) {
	a.mu.RLock()
	s, ok := a.svids[id]
	if !ok && a.own != nil && a.own.ID == id {
		s, ok = a.own, true
	}
	a.mu.RUnlock()
	if !ok || !a.cfg.Clock.Now().Before(s.Certificates[0].NotAfter) {
		return nil, false
	}
	return s, true
}

// OwnID is the agent's own identity, once it has one.
func (a *Agent) OwnID() (spiffeid.ID, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.own == nil {
		return spiffeid.ID{}, false
	}
	return a.own.ID, true
}

// EdgeCertificate returns an edge certificate to serve, if the agent has an edge source.
func (a *Agent) EdgeCertificate(name string) ([]byte, []byte, bool) {
	if a.cfg.Edge == nil {
		return nil, nil, false
	}
	return a.cfg.Edge.EdgeCertificate(name)
}

func (a *Agent) forwardEdge(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.cfg.Edge.Changed():
			a.notify()
		}
	}
}

// bundleSource lets TLS verification of the CA follow the live bundle.
type bundleSource struct{ a *Agent }

func (b bundleSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != b.a.cfg.TrustDomain {
		return nil, fmt.Errorf("sds: no bundle for trust domain %q", td.Name())
	}
	return b.a.bundle.Load(), nil
}
