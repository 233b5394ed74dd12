package service

import (
	"crypto/tls"
	"crypto/x509"
	"github.com/certmesh/certmesh/ca"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
)

// PeerSVID is the AuthInfo of a connection to the CA: the TLS state plus the
// result of verifying the client's SVID, done once per connection in the
// handshake instead of on every request (chain verification costs two
// signature checks, as much as signing itself).
type PeerSVID struct {
	credentials.TLSInfo
	// Presented is true when the client sent a certificate.
	Presented bool
	ID        spiffeid.ID
	NotAfter  time.Time
	// IssuedAt is when the CA signed it (NotBefore less the backdating):
	// an eviction refuses what was issued before it.
	IssuedAt time.Time
	// Err is why the presented certificate is not a valid SVID of the trust
	// domain; it is turned into Unauthenticated per request, so the caller
	// gets a gRPC code rather than a failed handshake.
	Err error
}

// TransportCredentials returns the server credentials of the CA listener:
// TLS from tlsConfig, then one SVID verification per connection.
func (s *Service) TransportCredentials(tlsConfig *tls.Config) credentials.TransportCredentials {
	return &svidCreds{TransportCredentials: credentials.NewTLS(tlsConfig), svc: s}
}

type svidCreds struct {
	credentials.TransportCredentials
	svc *Service
}

func (c *svidCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	if !ok {
		return conn, info, nil
	}
	p := PeerSVID{TLSInfo: tlsInfo}
	if certs := tlsInfo.State.PeerCertificates; len(certs) > 0 {
		p.Presented = true
		p.ID, p.NotAfter, p.Err = c.svc.verifyClientSVID(certs)
		p.IssuedAt = certs[0].NotBefore.Add(ca.LeafBackdate)
	}
	return conn, p, nil
}

func (c *svidCreds) Clone() credentials.TransportCredentials {
	return &svidCreds{TransportCredentials: c.TransportCredentials.Clone(), svc: c.svc}
}

func (s *Service) verifyClientSVID(chain []*x509.Certificate) (spiffeid.ID, time.Time, error) {
	td := s.cfg.CA.TrustDomain()
	id, _, err := x509svid.Verify(chain, trustSource{td: td, roots: s.cfg.CA.Roots()}, x509svid.WithTime(s.cfg.Clock.Now()))
	if err != nil {
		return spiffeid.ID{}, time.Time{}, err
	}
	return id, chain[0].NotAfter, nil
}
