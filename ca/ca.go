// Package ca is certmesh's internal certificate authority: it keeps root and
// intermediate keys in a state directory, signs X.509-SVIDs that follow the
// SPIFFE X509-SVID specification, publishes the trust bundle and rotates its
// roots without breaking a single handshake.
package ca

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca/store"
)

// Defaults and limits for leaf lifetimes.
const (
	DefaultTTL     = time.Hour
	DefaultMaxTTL  = 24 * time.Hour
	MinTTL         = time.Minute
	DefaultOverlap = 24 * time.Hour
	// LeafBackdate is how far a leaf's NotBefore lies before its signing, for
	// verifiers with skewed clocks; NotBefore+LeafBackdate is when it was issued.
	LeafBackdate    = 5 * time.Minute
	stateFileName   = "state.json"
	authoritiesPath = "authorities"
)

// Config configures a CA. Only Dir and TrustDomain are required.
type Config struct {
	// Dir is the CA's own directory (certmesh uses <state dir>/ca).
	Dir         string
	TrustDomain spiffeid.TrustDomain
	// KeyType of newly created roots (default: ec-p256 for a new CA, the
	// active root's type for a rotation). A renewed intermediate keeps the
	// type of the one it replaces.
	KeyType KeyType
	// DefaultTTL is used when a request names none (default 1h); MaxTTL
	// clamps longer requests (default 24h).
	DefaultTTL time.Duration
	MaxTTL     time.Duration
	// RotationOverlap is how long a new root is published before it signs.
	RotationOverlap time.Duration
	// IntermediateTTL is the signing intermediate's lifetime (`--ca-ttl`,
	// default DefaultIntermediateTTL, at least 2×MaxTTL); it is renewed
	// under the same root at half life (NextIntermediateDue).
	IntermediateTTL time.Duration
	// Import, when set and the directory is empty, makes the CA use a
	// user-provided root and intermediate instead of generating its own.
	Import *ImportParams
	// Upstream, when set, signs the CA's intermediates (at first start and
	// at every renewal): the CA has no root key, its root is the upstream
	// root that signed, and Rotate is refused (see upstream.go).
	Upstream UpstreamAuthority
	// UpstreamTimeout bounds one request to Upstream (default
	// DefaultUpstreamTimeout).
	UpstreamTimeout time.Duration
	// RootKeys and IntermediateKeys, when set, make new root and
	// intermediate keys on a token (an HSM) instead of in key files;
	// OpenKey opens the keys the state directory names by URI.
	RootKeys, IntermediateKeys KeyStore
	OpenKey                    KeyOpener

	Clock  clock.Clock
	Rand   io.Reader
	Logger *slog.Logger
}

// CA signs workload certificates. It is safe for concurrent use; signing
// reads the active authority without taking a lock.
type CA struct {
	cfg    Config
	policy RotationPolicy

	mu          sync.Mutex // serializes state changes and their persistence
	state       RotationState
	authorities map[string]*Authority

	legacyJWT *jwtKey // the shared jwt.key of older directories, until migrated

	jwt     atomic.Pointer[jwtSnapshot]
	gate    RotationGate
	lagging int  // watchers behind the bundle, as of the last gate check
	held    bool // a due switch is being held by the gate
	forced  int  // switches forced past the gate (ForceActivate), since start
	// renewFailures counts failed intermediate renewals since start.
	renewFailures int
	active        atomic.Pointer[Authority]
	bundle        atomic.Pointer[bundleSnapshot]
	watchMu       sync.Mutex
	watchCh       chan struct{} // closed and replaced on every bundle change

	// fetched holds the upstream's answers during Advance (upstream.go).
	fetched map[string]upstreamAnswer
}

// New loads the CA from cfg.Dir, creating a root and intermediate on first
// start (or importing the ones in cfg.Import). It does not start goroutines.
func New(cfg Config) (*CA, error) {
	if err := fillDefaults(&cfg); err != nil {
		return nil, err
	}
	c := &CA{
		cfg:         cfg,
		policy:      RotationPolicy{Overlap: cfg.RotationOverlap, MaxLeafLifetime: cfg.MaxTTL + LeafBackdate},
		authorities: map[string]*Authority{},
		watchCh:     make(chan struct{}),
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, authoritiesPath), 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	state, err := c.loadState()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = c.initialize()
	case err == nil:
		err = c.loadAuthorities(state)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

func fillDefaults(cfg *Config) error {
	if cfg.Dir == "" {
		return errors.New("ca: config: Dir is required")
	}
	if cfg.TrustDomain.IsZero() {
		return errors.New("ca: config: TrustDomain is required")
	}
	if cfg.KeyType != "" {
		if _, err := ParseKeyType(string(cfg.KeyType)); err != nil {
			return fmt.Errorf("ca: config: %w", err)
		}
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = DefaultTTL
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.DefaultTTL < MinTTL || cfg.MaxTTL < cfg.DefaultTTL {
		return fmt.Errorf("ca: config: need %v <= default TTL (%v) <= max TTL (%v)", MinTTL, cfg.DefaultTTL, cfg.MaxTTL)
	}
	if cfg.IntermediateTTL == 0 {
		cfg.IntermediateTTL = DefaultIntermediateTTL
	}
	if cfg.IntermediateTTL < 2*cfg.MaxTTL {
		return fmt.Errorf("%w: CA TTL %v, max TTL %v (want a CA TTL of at least %v)", ErrIntermediateTTL, cfg.IntermediateTTL, cfg.MaxTTL, 2*cfg.MaxTTL)
	}
	if cfg.RotationOverlap == 0 {
		cfg.RotationOverlap = DefaultOverlap
	}
	if cfg.Upstream != nil && cfg.Import != nil {
		return errors.New("ca: config: an upstream authority and an imported CA exclude each other")
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// initialize creates (or imports) the first authority. Key files are written
// before state.json, so a crash in between leaves an orphan directory and no
// state: the next start simply creates again.
func (c *CA) initialize() error {
	var (
		a   *Authority
		err error
	)
	switch {
	case c.cfg.Upstream != nil:
		a, err = c.upstreamAuthority(c.cfg.Clock.Now())
	case c.cfg.Import != nil:
		a, err = ImportAuthority(*c.cfg.Import)
	default:
		a, err = NewAuthority(AuthorityParams{TrustDomain: c.cfg.TrustDomain, KeyType: c.cfg.KeyType, IntermediateTTL: c.cfg.IntermediateTTL, Now: c.cfg.Clock.Now(), Rand: c.cfg.Rand,
			RootKeys: c.cfg.RootKeys, IntermediateKeys: c.cfg.IntermediateKeys})
	}
	if err != nil {
		return err
	}
	if a.jwt == nil { // imported: certmesh still makes the JWT key
		if a.jwt, err = newJWTKey(c.cfg.Rand); err != nil {
			return err
		}
	}
	if err := a.save(c.authoritiesDir()); err != nil {
		return err
	}
	state := RotationState{Authorities: []AuthorityState{{ID: a.ID, Phase: PhaseActive, ActivatedAt: c.cfg.Clock.Now()}}}
	if err := c.saveState(state); err != nil {
		return err
	}
	c.cfg.Logger.Info("created CA", "authority", a.ID, "trust_domain", c.cfg.TrustDomain.Name())
	c.authorities[a.ID] = a
	c.install(state)
	return nil
}

func (c *CA) loadAuthorities(state RotationState) error {
	if err := state.validate(); err != nil {
		return err
	}
	for _, s := range state.Authorities {
		a, err := loadAuthority(c.authoritiesDir(), s.ID, s.Intermediate, c.cfg.OpenKey)
		if err != nil {
			return err
		}
		td, err := trustDomainOf(a.Intermediate.URIs)
		if err != nil {
			return err
		}
		if !td.IsZero() && td != c.cfg.TrustDomain {
			return fmt.Errorf("%w: %s holds %q, asked for %q", ErrTrustDomainMismatch, c.cfg.Dir, td.Name(), c.cfg.TrustDomain.Name())
		}
		c.authorities[s.ID] = a
	}
	legacy, err := c.loadJWTKeys(state)
	if err != nil {
		return err
	}
	c.legacyJWT = legacy
	c.install(state)
	return nil
}

// install makes state the live one: the active signer and the bundles.
func (c *CA) install(state RotationState) {
	c.state = state
	if act, ok := state.Active(); ok {
		c.active.Store(c.authorities[act.ID])
	}
	c.bundle.Store(newBundleSnapshot(c.cfg.TrustDomain, state, c.authorities))
	c.jwt.Store(c.newJWTSnapshot(state))
	c.watchMu.Lock()
	close(c.watchCh)
	c.watchCh = make(chan struct{})
	c.watchMu.Unlock()
}

func (c *CA) authoritiesDir() string { return filepath.Join(c.cfg.Dir, authoritiesPath) }

func (c *CA) loadState() (RotationState, error) {
	var s RotationState
	b, err := os.ReadFile(filepath.Join(c.cfg.Dir, stateFileName))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("ca: %s is corrupt: %w", filepath.Join(c.cfg.Dir, stateFileName), err)
	}
	return s, nil
}

func (c *CA) saveState(s RotationState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: state: %w", err)
	}
	return store.WriteFile(filepath.Join(c.cfg.Dir, stateFileName), b, 0o644)
}

// TrustDomain is the trust domain this CA signs for.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.cfg.TrustDomain }
