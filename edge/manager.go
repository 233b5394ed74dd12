package edge

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
)

// cryptoRand is the default randomness; tests inject their own through Config.Rand.
var cryptoRand = rand.Reader

// Manager keeps the configured certificates valid. Build it with New, drive it with Run.
// The set of certificates and issuers may change while it runs (Ensure, Remove,
// EnsureIssuer), for controllers that derive them from Kubernetes objects.
type Manager struct {
	cfg    Config
	store  Store
	locks  *orderLocks
	http01 *httpResponder
	alpn   *alpnResponder
	orders chan struct{} // semaphore bounding concurrent orders

	setMu      sync.RWMutex // guards the sets below and the run state
	issuers    map[string]acmeClient
	issuerCfgs map[string]IssuerConfig
	certs      []*certState
	byName     map[string]*certState
	running    context.Context // nil unless Run is running
	loops      sync.WaitGroup

	mu      sync.Mutex
	changed chan struct{}
}

// CertStatus is a certificate's state for humans and health checks.
type CertStatus struct {
	Name        string    `json:"name"`
	DNSNames    []string  `json:"dnsNames"`
	Issuer      string    `json:"issuer"`
	NotAfter    time.Time `json:"notAfter,omitzero"`
	NextRenewal time.Time `json:"nextRenewal,omitzero"`
	Reason      Reason    `json:"reason,omitempty"`
	LastError   error     `json:"-"`
	// Error is LastError's text, for status output and JSON.
	Error    string    `json:"lastError,omitempty"`
	Failures int       `json:"failures"`
	RetryAt  time.Time `json:"retryAt,omitzero"`
	Orders   int       `json:"orders"`
}

// New validates cfg, fills defaults and builds the Manager; it starts nothing.
func New(cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:        cfg,
		store:      cfg.Store,
		locks:      newOrderLocks(cfg.Dir),
		http01:     newHTTPResponder(),
		alpn:       newALPNResponder(),
		issuers:    map[string]acmeClient{},
		issuerCfgs: map[string]IssuerConfig{},
		byName:     map[string]*certState{},
		orders:     make(chan struct{}, cfg.MaxConcurrentOrders),
		changed:    make(chan struct{}),
	}
	for name, iss := range cfg.Issuers {
		if err := m.setIssuer(name, iss); err != nil {
			return nil, err
		}
	}
	for _, spec := range cfg.Certificates {
		st, err := m.newCertState(spec)
		if err != nil {
			return nil, err
		}
		m.certs = append(m.certs, st)
		m.byName[spec.Name] = st
	}
	return m, nil
}

func (m *Manager) newCertState(spec CertificateSpec) (*certState, error) {
	s, err := newSolver(spec, m.cfg, m.http01, m.alpn)
	if err != nil {
		return nil, err
	}
	return &certState{
		spec: spec, solver: s, lockKey: lockKey(spec.Issuer, spec.DNSNames),
		wake: make(chan struct{}, 1),
	}, nil
}

// setIssuer builds the client of one issuer; the caller holds setMu or owns m alone.
func (m *Manager) setIssuer(name string, iss IssuerConfig) error {
	hc := m.cfg.HTTPClient
	if hc == nil {
		var err error
		if hc, err = issuerHTTPClient(iss); err != nil {
			return fmt.Errorf("issuer %s: %w", name, err)
		}
	}
	m.issuers[name] = &legoIssuer{
		name: name, cfg: iss, http: hc,
		accounts: accountStore{store: m.store}, random: m.cfg.Rand,
	}
	m.issuerCfgs[name] = iss
	return nil
}

// issuer returns the client of name, nil when it is unknown.
func (m *Manager) issuer(name string) acmeClient {
	m.setMu.RLock()
	defer m.setMu.RUnlock()
	return m.issuers[name]
}

func (m *Manager) issuerConfig(name string) IssuerConfig {
	m.setMu.RLock()
	defer m.setMu.RUnlock()
	return m.issuerCfgs[name]
}

func (m *Manager) lookupState(name string) (*certState, bool) {
	m.setMu.RLock()
	defer m.setMu.RUnlock()
	st, ok := m.byName[name]
	return st, ok
}

func (m *Manager) snapshot() []*certState {
	m.setMu.RLock()
	defer m.setMu.RUnlock()
	return slices.Clone(m.certs)
}

// HTTP01Handler serves the HTTP-01 challenges of every certificate, for mounting on a
// listener of the caller's choice instead of (or besides) HTTP01Addr.
func (m *Manager) HTTP01Handler() http.Handler { return m.http01 }

// Lookup returns what to serve now for an edge certificate name.
func (m *Manager) Lookup(name string) (Served, bool) {
	st, ok := m.lookupState(name)
	if !ok {
		return Served{}, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.served == nil {
		return Served{}, false
	}
	return *st.served, true
}

// Changed returns a channel closed at the next change of any served certificate. Take
// a new channel after each close.
func (m *Manager) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

func (m *Manager) notify() {
	m.mu.Lock()
	defer m.mu.Unlock()
	close(m.changed)
	m.changed = make(chan struct{})
}

// Status reports every certificate, in configuration order (Ensure'd ones after).
func (m *Manager) Status() []CertStatus {
	certs := m.snapshot()
	out := make([]CertStatus, 0, len(certs))
	for _, st := range certs {
		out = append(out, st.status())
	}
	return out
}

// Names returns the configured certificate names, for the serving side to watch.
func (m *Manager) Names() []string {
	certs := m.snapshot()
	names := make([]string, 0, len(certs))
	for _, st := range certs {
		names = append(names, st.spec.Name)
	}
	return slices.Clip(names)
}
