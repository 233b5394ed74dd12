package edge

import (
	"context"
	"fmt"
	"reflect"
	"regexp"
	"slices"

	"github.com/go-acme/lego/v4/challenge/dns01"
)

// qualifiedName is what Ensure accepts: a name as in Config, optionally prefixed by a
// namespace ("shop/web-tls"), so that certificates derived from Kubernetes objects of
// different namespaces never collide.
var qualifiedName = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?/)?[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$`)

// EnsureIssuer adds the issuer name, or replaces it when cfg differs from the one in
// use (an unchanged one keeps its client and registered account).
func (m *Manager) EnsureIssuer(name string, cfg IssuerConfig) error {
	filled, err := cfg.withDefaults(name)
	if err != nil {
		return err
	}
	m.setMu.Lock()
	defer m.setMu.Unlock()
	if old, ok := m.issuerCfgs[name]; ok && reflect.DeepEqual(old, filled) {
		return nil
	}
	return m.setIssuer(name, filled)
}

// Ensure adds spec, or replaces the certificate of the same name when spec differs;
// an identical spec is a no-op. The certificate is kept valid from then on (at once
// when Run is running). The issuer must be known (Config.Issuers or EnsureIssuer).
func (m *Manager) Ensure(spec CertificateSpec) error {
	if !qualifiedName.MatchString(spec.Name) {
		return fmt.Errorf("%w: certificate name %q must be [namespace/]lower-case-name", ErrInvalidConfig, spec.Name)
	}
	if err := validateSolver(spec); err != nil {
		return err
	}
	m.setMu.Lock()
	defer m.setMu.Unlock()
	if _, ok := m.issuers[spec.Issuer]; !ok {
		return fmt.Errorf("%w: certificate %q names unknown issuer %q", ErrInvalidConfig, spec.Name, spec.Issuer)
	}
	old, exists := m.byName[spec.Name]
	if exists && reflect.DeepEqual(old.spec, spec) {
		return nil
	}
	st, err := m.newCertState(spec)
	if err != nil {
		return err
	}
	if exists {
		m.dropLocked(old)
	}
	if r := spec.Solver.DNS.Resolvers; spec.Solver.Type == DNS01 && len(r) > 0 {
		_ = dns01.AddRecursiveNameservers(r)(nil)
	}
	m.certs = append(m.certs, st)
	m.byName[spec.Name] = st
	m.startLocked(st)
	return nil
}

// Remove stops keeping the certificate name valid and stops serving it. The stored
// copy is left alone, as cert-manager leaves a Secret behind: it may still be in use.
func (m *Manager) Remove(name string) {
	m.setMu.Lock()
	st, ok := m.byName[name]
	if ok {
		m.dropLocked(st)
	}
	m.setMu.Unlock()
	if ok {
		m.notify()
	}
}

// Resync makes the certificate name look at its store and policy now, e.g. because
// its Secret was just deleted. Unknown names are ignored.
func (m *Manager) Resync(name string) {
	if st, ok := m.lookupState(name); ok {
		select {
		case st.wake <- struct{}{}:
		default:
		}
	}
}

// dropLocked stops st's loop and forgets it; the caller holds setMu.
func (m *Manager) dropLocked(st *certState) {
	if st.stop != nil {
		st.stop()
	}
	delete(m.byName, st.spec.Name)
	m.certs = slices.DeleteFunc(m.certs, func(c *certState) bool { return c == st })
}

// startLocked starts st's loop when Run is running; the caller holds setMu.
func (m *Manager) startLocked(st *certState) {
	if m.running == nil {
		return
	}
	ctx, cancel := context.WithCancel(m.running)
	st.stop = cancel
	m.loops.Go(func() { m.loop(ctx, st) })
}
