package kubetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
)

// pki is the cluster's throwaway PKI: one CA for serving and client
// certificates, and the ServiceAccount token signing key.
type pki struct {
	dir       string
	caCert    *x509.Certificate
	caKey     crypto.Signer
	caPEM     []byte
	saKeyPath string
	saPubPath string
}

func newPKI(dir string) (*pki, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubetest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: dir, caCert: cert, caKey: key, caPEM: pemCert(der)}
	if err := os.WriteFile(p.path("ca.crt"), p.caPEM, 0o600); err != nil {
		return nil, err
	}
	if err := p.writeServingCert(); err != nil {
		return nil, err
	}
	return p, p.writeServiceAccountKey()
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// issue signs a leaf for the given subject; client chooses the usage.
func (p *pki) issue(subject pkix.Name, client bool, ips []net.IP, dns []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 96))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subject, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: ips, DNSNames: dns,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemCert(der), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func (p *pki) writeServingCert() error {
	certPEM, keyPEM, err := p.issue(pkix.Name{CommonName: "kube-apiserver"}, false,
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []string{"localhost", "kubernetes.default.svc"})
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.path("apiserver.crt"), certPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(p.path("apiserver.key"), keyPEM, 0o600)
}

// writeServiceAccountKey makes the key the apiserver signs ServiceAccount
// tokens with (ES256) and the public half it verifies them with.
func (p *pki) writeServiceAccountKey() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	p.saKeyPath, p.saPubPath = p.path("sa.key"), p.path("sa.pub")
	if err := os.WriteFile(p.saKeyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(p.saPubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600)
}

// clientConfig is a rest.Config authenticating with a client certificate
// for user in groups (the apiserver trusts the harness CA for clients).
func (p *pki) clientConfig(host, user string, groups ...string) (*rest.Config, error) {
	certPEM, keyPEM, err := p.issue(pkix.Name{CommonName: user, Organization: groups}, true, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("client certificate for %s: %w", user, err)
	}
	return &rest.Config{
		Host: host, QPS: 1000, Burst: 2000,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM, CertData: certPEM, KeyData: keyPEM},
	}, nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
