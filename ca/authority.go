package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca/store"
)

// Authority is one root and the intermediate that signs workloads under it.
// The root key is absent when a user brought their own CA: certmesh then only
// needs the intermediate.
type Authority struct {
	ID              string
	Root            *x509.Certificate
	RootKey         crypto.Signer // nil for a bring-your-own root
	Intermediate    *x509.Certificate
	IntermediateKey crypto.Signer
	intermediateDER []byte
	rootDER         []byte
	chainAfterLeaf  [][]byte // intermediate, root: appended to every leaf
	// chainAfterLeafPEM is chainAfterLeaf as PEM, encoded once per authority
	// rather than for every leaf the gRPC service answers with.
	chainAfterLeafPEM []string
	intermediatePool  *x509.CertPool
	// jwt signs JWT-SVIDs while the authority is active; nil when the
	// authority predates per-authority JWT keys (the CA's legacy key then).
	jwt *jwtKey
	// interName names the intermediate's files (see intermediateFile).
	interName string
}

// Files inside an authority's directory.
const (
	rootCertFile = "root.crt"
	rootKeyFile  = "root.key"
)

// rootLifetime is a generated root's lifetime. Its intermediates live
// IntermediateTTL and are renewed under it; leaves are clamped to them.
const rootLifetime = 10 * 365 * 24 * time.Hour

// AuthorityParams describe a new self-made authority.
type AuthorityParams struct {
	TrustDomain spiffeid.TrustDomain
	KeyType     KeyType
	// IntermediateTTL is the intermediate's lifetime (default DefaultIntermediateTTL).
	IntermediateTTL time.Duration
	Now             time.Time
	Rand            io.Reader
	// RootKeys and IntermediateKeys, when set, make the keys on a token.
	RootKeys, IntermediateKeys KeyStore
}

// IntermediateParams describe a successor intermediate under the same root.
type IntermediateParams struct {
	TrustDomain spiffeid.TrustDomain
	TTL         time.Duration
	Now         time.Time
	Rand        io.Reader
	// Keys, when set, makes the intermediate's key on a token.
	Keys KeyStore
}

// NewAuthority creates a fresh root and intermediate.
func NewAuthority(p AuthorityParams) (*Authority, error) {
	rootKey, err := newKey(p.RootKeys, p.KeyType, p.Rand)
	if err != nil {
		return nil, fmt.Errorf("ca: root key: %w", err)
	}
	intKey, err := newKey(p.IntermediateKeys, p.KeyType, p.Rand)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate key: %w", err)
	}
	serial, err := newSerial(p.Rand)
	if err != nil {
		return nil, err
	}
	tdURL := p.TrustDomain.ID().URL()
	root := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"certmesh"}, CommonName: "certmesh root " + p.TrustDomain.Name() + " " + serial.Text(16)[:8]},
		NotBefore:             p.Now.Add(-LeafBackdate),
		NotAfter:              p.Now.Add(rootLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{tdURL},
	}
	rootDER, err := x509.CreateCertificate(p.Rand, root, root, rootKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: create root: %w", err)
	}
	rootCert, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, fmt.Errorf("ca: parse root: %w", err)
	}
	intermediate, err := newIntermediate(IntermediateParams{TrustDomain: p.TrustDomain, TTL: p.IntermediateTTL, Now: p.Now, Rand: p.Rand, Keys: p.IntermediateKeys}, rootCert, rootKey, intKey)
	if err != nil {
		return nil, err
	}
	a, err := assemble(authorityID(rootCert), rootCert, rootKey, intermediate, intKey)
	if err != nil {
		return nil, err
	}
	if a.jwt, err = newJWTKey(p.Rand); err != nil {
		return nil, err
	}
	return a, nil
}

// withNewIntermediate is a's successor: the same root, root key and JWT
// key, a new intermediate of the same key type as the current one. Its
// files get a new name, so saving it overwrites nothing.
func (a *Authority) withNewIntermediate(p IntermediateParams) (*Authority, error) {
	if a.RootKey == nil {
		return nil, fmt.Errorf("%w: no root key to sign a new intermediate", ErrBadAuthority)
	}
	kt, err := KeyTypeOf(a.IntermediateKey.Public())
	if err != nil {
		return nil, err
	}
	if _, onToken := a.IntermediateKey.(ExternalKey); onToken && p.Keys == nil {
		return nil, fmt.Errorf("%w: the intermediate key is on a token and its successor would be written to a file", ErrNoKeyStore)
	}
	key, err := newKey(p.Keys, kt, p.Rand)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate key: %w", err)
	}
	cert, err := newIntermediate(p, a.Root, a.RootKey, key)
	if err != nil {
		return nil, err
	}
	next, err := assemble(a.ID, a.Root, a.RootKey, cert, key)
	if err != nil {
		return nil, err
	}
	next.jwt, next.interName = a.jwt, intermediateName(cert)
	return next, nil
}

// intermediateName names a successor intermediate's files by its serial.
func intermediateName(cert *x509.Certificate) string {
	h := cert.SerialNumber.Text(16)
	return h[:min(len(h), 16)]
}

func newIntermediate(p IntermediateParams, root *x509.Certificate, rootKey, intKey crypto.Signer) (*x509.Certificate, error) {
	serial, err := newSerial(p.Rand)
	if err != nil {
		return nil, err
	}
	if p.TTL <= 0 {
		p.TTL = DefaultIntermediateTTL
	}
	notAfter := p.Now.Add(p.TTL)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"certmesh"}, CommonName: "certmesh intermediate " + p.TrustDomain.Name() + " " + serial.Text(16)[:8]},
		NotBefore:             p.Now.Add(-LeafBackdate),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{p.TrustDomain.ID().URL()},
	}
	der, err := x509.CreateCertificate(p.Rand, tmpl, root, intKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: create intermediate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// ErrBadAuthority is returned when provided or stored CA material does not fit together.
var ErrBadAuthority = errors.New("ca: invalid CA material")

// assemble checks that the pieces belong together and precomputes what
// signing needs, so the hot path does no parsing.
func assemble(id string, root *x509.Certificate, rootKey crypto.Signer, intermediate *x509.Certificate, intKey crypto.Signer) (*Authority, error) {
	if !root.IsCA || !intermediate.IsCA {
		return nil, fmt.Errorf("%w: root and intermediate must both be CA certificates", ErrBadAuthority)
	}
	if err := intermediate.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("%w: intermediate is not signed by the root: %v", ErrBadAuthority, err)
	}
	if !keysMatch(intermediate.PublicKey, intKey) {
		return nil, fmt.Errorf("%w: intermediate key does not match the intermediate certificate", ErrBadAuthority)
	}
	if rootKey != nil && !keysMatch(root.PublicKey, rootKey) {
		return nil, fmt.Errorf("%w: root key does not match the root certificate", ErrBadAuthority)
	}
	pool := x509.NewCertPool()
	pool.AddCert(intermediate)
	return &Authority{
		ID: id, Root: root, RootKey: rootKey, Intermediate: intermediate, IntermediateKey: intKey,
		rootDER: root.Raw, intermediateDER: intermediate.Raw,
		chainAfterLeaf:    [][]byte{intermediate.Raw, root.Raw},
		chainAfterLeafPEM: []string{certPEM(intermediate.Raw), certPEM(root.Raw)},
		intermediatePool:  pool,
	}, nil
}

func newSerial(rnd io.Reader) (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rnd, limit)
	if err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// authorityFile is one file of an authority's directory.
type authorityFile struct {
	name string
	data func() ([]byte, error)
	perm os.FileMode
}

// save writes the authority's files into dir/<id>/, keys 0600, each atomically.
func (a *Authority) save(dir string) error {
	files := []authorityFile{
		keyFile(intermediateFile(a.interName, ".key"), a.IntermediateKey),
		{intermediateFile(a.interName, ".crt"), func() ([]byte, error) { return EncodeCertsPEM(a.Intermediate), nil }, 0o644},
		{rootCertFile, func() ([]byte, error) { return EncodeCertsPEM(a.Root), nil }, 0o644},
	}
	if a.RootKey != nil {
		files = append(files, keyFile(rootKeyFile, a.RootKey))
	}
	if a.jwt != nil {
		files = append(files, authorityFile{jwtKeyFile, func() ([]byte, error) { return EncodeKeyPEM(a.jwt.key) }, 0o600})
	}
	return a.write(dir, files)
}

// saveJWTKey writes k as the authority's JWT key (dir/<id>/jwt.key).
func (a *Authority) saveJWTKey(dir string, k *jwtKey) error {
	return a.write(dir, []authorityFile{{jwtKeyFile, func() ([]byte, error) { return EncodeKeyPEM(k.key) }, 0o600}})
}

func (a *Authority) write(dir string, files []authorityFile) error {
	d := filepath.Join(dir, a.ID)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("ca: save authority: %w", err)
	}
	for _, f := range files {
		b, err := f.data()
		if err != nil {
			return err
		}
		if err := store.WriteFile(filepath.Join(d, f.name), b, f.perm); err != nil {
			return fmt.Errorf("ca: save authority: %w", err)
		}
	}
	return nil
}

// loadAuthority reads dir/<id>/ with the intermediate called interName. A
// missing or corrupt file is a clear error naming the file; nothing is
// rewritten, so the operator can repair it.
func loadAuthority(dir, id, interName string, open KeyOpener) (*Authority, error) {
	d := filepath.Join(dir, id)
	readCert := func(name string) (*x509.Certificate, error) {
		b, err := os.ReadFile(filepath.Join(d, name))
		if err != nil {
			return nil, fmt.Errorf("ca: authority %s: %w", id, err)
		}
		certs, err := ParseCertsPEM(b)
		if err != nil {
			return nil, fmt.Errorf("ca: authority %s: %s: %w", id, filepath.Join(d, name), err)
		}
		return certs[0], nil
	}
	readKey := func(name string) (crypto.Signer, error) {
		if _, err := os.Stat(filepath.Join(d, name+keyURISuffix)); err == nil {
			k, err := readKeyURI(filepath.Join(d, name+keyURISuffix), open)
			if err != nil {
				return nil, fmt.Errorf("ca: authority %s: %w", id, err)
			}
			return k, nil
		}
		b, err := os.ReadFile(filepath.Join(d, name))
		if err != nil {
			return nil, fmt.Errorf("ca: authority %s: %w", id, err)
		}
		k, err := ParseKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("ca: authority %s: %s: %w", id, filepath.Join(d, name), err)
		}
		return k, nil
	}
	root, err := readCert(rootCertFile)
	if err != nil {
		return nil, err
	}
	intermediate, err := readCert(intermediateFile(interName, ".crt"))
	if err != nil {
		return nil, err
	}
	intKey, err := readKey(intermediateFile(interName, ".key"))
	if err != nil {
		return nil, err
	}
	var rootKey crypto.Signer
	if hasFile(d, rootKeyFile) || hasFile(d, rootKeyFile+keyURISuffix) {
		if rootKey, err = readKey(rootKeyFile); err != nil {
			return nil, err
		}
	}
	a, err := assemble(id, root, rootKey, intermediate, intKey)
	if err != nil {
		return nil, err
	}
	a.interName = interName
	if a.jwt, err = readJWTKey(filepath.Join(d, jwtKeyFile)); err != nil {
		return nil, err
	}
	return a, nil
}

// ImportParams is a bring-your-own CA: the root certificate of the
// enterprise PKI and an intermediate (with key) it issued for certmesh.
type ImportParams struct {
	RootPEM            []byte
	IntermediatePEM    []byte
	IntermediateKeyPEM []byte
}

// ImportAuthority checks user-provided CA material and turns it into an Authority.
func ImportAuthority(p ImportParams) (*Authority, error) {
	roots, err := ParseCertsPEM(p.RootPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: import root: %w", err)
	}
	ints, err := ParseCertsPEM(p.IntermediatePEM)
	if err != nil {
		return nil, fmt.Errorf("ca: import intermediate: %w", err)
	}
	key, err := ParseKeyPEM(p.IntermediateKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: import intermediate key: %w", err)
	}
	return assemble(authorityID(roots[0]), roots[0], nil, ints[0], key)
}

// authorityID names an authority by its root: stable, short, and the same on
// every replica that loads the same root.
func authorityID(root *x509.Certificate) string {
	sum := sha256.Sum256(root.Raw)
	return hex.EncodeToString(sum[:6])
}
