package ca

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrNoCA means a state directory holds no CA yet.
var ErrNoCA = errors.New("ca: no CA in this directory (run `certmesh ca init` or start the server)")

// ErrTrustDomainMismatch means a directory's CA belongs to another trust domain.
var ErrTrustDomainMismatch = errors.New("ca: the CA in this directory is for another trust domain")

// Snapshot is a read-only look at a CA directory: public material only, no
// lock taken, so it works while a server owns the directory.
type Snapshot struct {
	TrustDomain spiffeid.TrustDomain
	State       RotationState
	Roots       []*Authority // certificates only; keys are not read
	hasRootKey  []bool       // per Roots: a root key file exists
}

// ReadSnapshot reads dir's rotation state and CA certificates.
func ReadSnapshot(dir string) (*Snapshot, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoCA, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	var s RotationState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("ca: %s is corrupt: %w", filepath.Join(dir, stateFileName), err)
	}
	snap := &Snapshot{State: s}
	for _, a := range s.Authorities {
		d := filepath.Join(dir, authoritiesPath, a.ID)
		root, err := readCertFile(filepath.Join(d, rootCertFile))
		if err != nil {
			return nil, err
		}
		inter, err := readCertFile(filepath.Join(d, intermediateFile(a.Intermediate, ".crt")))
		if err != nil {
			return nil, err
		}
		_, statErr := os.Stat(filepath.Join(d, rootKeyFile))
		snap.hasRootKey = append(snap.hasRootKey, statErr == nil)
		snap.Roots = append(snap.Roots, &Authority{ID: a.ID, Root: root, Intermediate: inter, interName: a.Intermediate})
	}
	if len(snap.Roots) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoCA, dir)
	}
	td, err := trustDomainOf(snap.Roots[0].Root.URIs)
	if err != nil {
		return nil, err
	}
	snap.TrustDomain = td
	return snap, nil
}

// Status describes the snapshot as CA.Status would, at now. The server's
// CA TTL is not known here: an intermediate's renewal is shown at half its
// own life, which is when a server renews one made under its policy.
func (s *Snapshot) Status(now time.Time) Status {
	st := Status{TrustDomain: s.TrustDomain.Name(), Phase: s.State.CurrentPhase(), State: s.State.clone().Authorities}
	for i, a := range s.State.Authorities {
		r := s.Roots[i]
		info := AuthorityInfo{AuthorityState: a, RootSubject: r.Root.Subject.String(), RootNotAfter: r.Root.NotAfter,
			IntermediateEnd: r.Intermediate.NotAfter, IntermediateStart: r.Intermediate.NotBefore, HasRootKey: s.hasRootKey[i]}
		var inter IntermediateStep
		if a.Phase != PhaseRetiring {
			life := r.Intermediate.NotAfter.Sub(r.Intermediate.NotBefore.Add(LeafBackdate))
			inter = NextIntermediateDue(now, IntermediateLife{NotBefore: r.Intermediate.NotBefore, NotAfter: r.Intermediate.NotAfter,
				RootNotAfter: r.Root.NotAfter, Renewable: s.hasRootKey[i]}, IntermediatePolicy{TTL: life})
		}
		info.NextStep, info.NextStepKind = nextStep(a, inter)
		info.NotRenewable = inter.NotRenewable
		st.Authorities = append(st.Authorities, info)
	}
	st.finish(now)
	return st
}

// BundlePEM is the trust bundle of the snapshot.
func (s *Snapshot) BundlePEM() []byte {
	var out []byte
	for _, a := range s.Roots {
		out = append(out, EncodeCertsPEM(a.Root)...)
	}
	return out
}

func readCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	certs, err := ParseCertsPEM(b)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return certs[0], nil
}

// trustDomainOf reads the trust domain from a CA certificate's URI SAN
// (certmesh puts spiffe://<td> there). A root without one (bring your own)
// yields the zero trust domain, which callers treat as "unknown".
func trustDomainOf(uris []*url.URL) (spiffeid.TrustDomain, error) {
	for _, u := range uris {
		if u.Scheme == "spiffe" {
			td, err := spiffeid.TrustDomainFromString(u.Host)
			if err != nil {
				return spiffeid.TrustDomain{}, fmt.Errorf("ca: root URI SAN %q: %w", u, err)
			}
			return td, nil
		}
	}
	return spiffeid.TrustDomain{}, nil
}
