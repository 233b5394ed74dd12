package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/certmesh/certmesh/ca/store"
)

// File names inside Dir/<name>/, the data keys of a kubernetes.io/tls Secret.
const (
	FileCert = "tls.crt"
	FileKey  = "tls.key"
	FileCA   = "ca.crt"
)

// Served is what to serve for an edge certificate name right now.
type Served struct {
	Name string
	// CertPEM is the leaf followed by its chain.
	CertPEM []byte
	KeyPEM  []byte
	// CAPEM is the issuing CA as the ACME server returned it (may be empty).
	CAPEM    []byte
	NotAfter time.Time
	leaf     *x509.Certificate
}

// Leaf returns the parsed leaf certificate.
func (s Served) Leaf() *x509.Certificate { return s.leaf }

// Store keeps certificates and ACME accounts. It follows certmagic's Storage contract:
// a context on every method, a missing item reported as an error wrapping
// fs.ErrNotExist, safe for concurrent use. Each save replaces the item as a whole
// (readers see the old or the new one). FileStore keeps them in a directory;
// edge/secretstore keeps them in Kubernetes Secrets.
//
// Certificate names are those of CertificateSpec: a label ("web") or, for specs added
// with Manager.Ensure, a namespace-qualified "ns/name" the store maps as it sees fit.
type Store interface {
	// LoadCertificate returns the stored certificate of name; a missing one yields an
	// error wrapping both ErrNoCertificate and fs.ErrNotExist.
	LoadCertificate(ctx context.Context, name string) (Served, error)
	SaveCertificate(ctx context.Context, sv Served) error
	// LoadAccount returns the account of issuer; fs.ErrNotExist when it has no key yet.
	LoadAccount(ctx context.Context, issuer string) (AccountData, error)
	SaveAccount(ctx context.Context, issuer string, acct AccountData) error
}

// AccountData is an ACME account as stored: its key and the registration record.
type AccountData struct {
	// KeyPEM is the account's private key.
	KeyPEM []byte
	// Record is the JSON registration (directory URL + lego's resource); nil before
	// the first registration. SaveAccount leaves a stored record alone when nil.
	Record []byte
}

// FileStore keeps certificates under Dir/<name>/ and accounts under
// Dir/accounts/<issuer>/, written atomically with keys 0600.
type FileStore struct{ Dir string }

var _ Store = FileStore{}

// LoadCertificate implements Store.
func (f FileStore) LoadCertificate(_ context.Context, name string) (Served, error) {
	return certStore{dir: f.Dir}.loadCert(name)
}

// SaveCertificate implements Store.
func (f FileStore) SaveCertificate(_ context.Context, sv Served) error {
	return certStore{dir: f.Dir}.saveCert(sv)
}

// ParseServed checks that keyPEM matches the leaf of certPEM and returns what to serve;
// stores other than FileStore build their answers with it.
func ParseServed(name string, certPEM, keyPEM, caPEM []byte) (Served, error) {
	return parseServed(name, certPEM, keyPEM, caPEM)
}

// certStore keeps certificates as files. Writes are atomic per file (ca/store: write,
// fsync, rename, then one fsync of the directory); a crash between the renames can
// leave a key that does not match the certificate, which loadCert detects and treats
// as missing, so the name is re-issued.
type certStore struct{ dir string }

func (s certStore) certDir(name string) string { return filepath.Join(s.dir, name) }

// loadCert reads and checks the stored certificate of name. A missing file yields an
// error wrapping both ErrNoCertificate and fs.ErrNotExist.
func (s certStore) loadCert(name string) (Served, error) {
	dir := s.certDir(name)
	certPEM, err := os.ReadFile(filepath.Join(dir, FileCert))
	if err != nil {
		return Served{}, fmt.Errorf("%w: %s: %w", ErrNoCertificate, name, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, FileKey))
	if err != nil {
		return Served{}, fmt.Errorf("%w: %s: %w", ErrNoCertificate, name, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, FileCA))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Served{}, fmt.Errorf("%w: %s: %w", ErrNoCertificate, name, err)
	}
	return parseServed(name, certPEM, keyPEM, caPEM)
}

// parseServed checks that the key matches the leaf and fills in the parsed fields.
func parseServed(name string, certPEM, keyPEM, caPEM []byte) (Served, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return Served{}, fmt.Errorf("%w: %s: %w", ErrNoCertificate, name, err)
	}
	return Served{
		Name: name, CertPEM: certPEM, KeyPEM: keyPEM, CAPEM: caPEM,
		NotAfter: pair.Leaf.NotAfter, leaf: pair.Leaf,
	}, nil
}

// saveCert writes the three files of s, the key with mode 0600.
func (s certStore) saveCert(sv Served) error {
	dir := s.certDir(sv.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("edge: store %s: %w", sv.Name, err)
	}
	err := store.WriteFiles(dir,
		store.Entry{Name: FileCA, Data: sv.CAPEM, Perm: 0o644},
		store.Entry{Name: FileKey, Data: sv.KeyPEM, Perm: 0o600},
		store.Entry{Name: FileCert, Data: sv.CertPEM, Perm: 0o644},
	)
	if err != nil {
		return fmt.Errorf("edge: store %s: %w", sv.Name, err)
	}
	return nil
}
