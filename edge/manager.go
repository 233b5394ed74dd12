package edge

import (
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
type Manager struct {
	cfg     Config
	store   certStore
	locks   *orderLocks
	http01  *httpResponder
	alpn    *alpnResponder
	issuers map[string]acmeClient
	certs   []*certState
	byName  map[string]*certState
	orders  chan struct{} // semaphore bounding concurrent orders

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
		cfg:     cfg,
		store:   certStore{dir: cfg.Dir},
		locks:   newOrderLocks(cfg.Dir),
		http01:  newHTTPResponder(),
		alpn:    newALPNResponder(),
		issuers: map[string]acmeClient{},
		byName:  map[string]*certState{},
		orders:  make(chan struct{}, cfg.MaxConcurrentOrders),
		changed: make(chan struct{}),
	}
	if err := m.buildIssuers(); err != nil {
		return nil, err
	}
	for _, spec := range cfg.Certificates {
		s, err := newSolver(spec, cfg, m.http01, m.alpn)
		if err != nil {
			return nil, err
		}
		st := &certState{spec: spec, solver: s, lockKey: lockKey(spec.Issuer, spec.DNSNames)}
		m.certs = append(m.certs, st)
		m.byName[spec.Name] = st
	}
	return m, nil
}

func (m *Manager) buildIssuers() error {
	for name, iss := range m.cfg.Issuers {
		hc := m.cfg.HTTPClient
		if hc == nil {
			var err error
			if hc, err = issuerHTTPClient(iss); err != nil {
				return fmt.Errorf("issuer %s: %w", name, err)
			}
		}
		m.issuers[name] = &legoIssuer{
			name: name, cfg: iss, http: hc,
			accounts: accountStore{dir: m.cfg.Dir}, random: m.cfg.Rand,
		}
	}
	return nil
}

// HTTP01Handler serves the HTTP-01 challenges of every certificate, for mounting on a
// listener of the caller's choice instead of (or besides) HTTP01Addr.
func (m *Manager) HTTP01Handler() http.Handler { return m.http01 }

// Lookup returns what to serve now for an edge certificate name.
func (m *Manager) Lookup(name string) (Served, bool) {
	st, ok := m.byName[name]
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

// Status reports every certificate, in configuration order.
func (m *Manager) Status() []CertStatus {
	out := make([]CertStatus, 0, len(m.certs))
	for _, st := range m.certs {
		out = append(out, st.status())
	}
	return out
}

// Names returns the configured certificate names, for the serving side to watch.
func (m *Manager) Names() []string {
	names := make([]string, 0, len(m.certs))
	for _, st := range m.certs {
		names = append(names, st.spec.Name)
	}
	return slices.Clip(names)
}
