package service

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/wire"
)

// ServingCert keeps the CA's own TLS certificate fresh: issued by the CA
// itself, renewed in the handshake path once half its life has passed.
type ServingCert struct {
	CA          *ca.CA
	DNSNames    []string
	IPAddresses []net.IP
	Clock       clock.PassiveClock

	mu   sync.Mutex
	cert *tls.Certificate
	half time.Time
}

// GetCertificate is a tls.Config.GetCertificate callback.
func (s *ServingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Clock.Now()
	if s.cert != nil && now.Before(s.half) {
		return s.cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("service: serving key: %w", err)
	}
	leaf, err := s.CA.Sign(ca.SignParams{
		PublicKey: key.Public(), ID: wire.ServerID(s.CA.TrustDomain()),
		DNSNames: s.DNSNames, IPAddresses: s.IPAddresses, TTL: 24 * time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("service: serving certificate: %w", err)
	}
	s.cert = &tls.Certificate{Certificate: leaf.Chain[:len(leaf.Chain)-1], PrivateKey: key}
	s.half = now.Add(leaf.NotAfter.Sub(now) / 2)
	return s.cert, nil
}

// ServerTLSConfig is the listener's TLS: 1.2+ with AEAD suites only, and a
// client certificate requested but not required — bearer-token callers have
// none, and a presented one is verified per request against the live bundle
// (which changes during a rotation).
func (s *ServingCert) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   ModernCipherSuites,
		GetCertificate: s.GetCertificate,
		ClientAuth:     tls.RequestClientCert,
		NextProtos:     []string{"h2"},
	}
}

// ModernCipherSuites are the TLS 1.2 suites certmesh accepts: ECDHE with
// AEAD only. TLS 1.3 suites are not configurable and are all modern.
var ModernCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}
