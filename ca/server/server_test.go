package server

import (
	"crypto/x509"
	"net"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca/wire"
)

func TestServingNames(t *testing.T) {
	loopback := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	cases := []struct {
		name    string
		listen  string
		extra   []string
		wantDNS []string
		wantIPs []net.IP
	}{
		{name: "loopback only", listen: "127.0.0.1:8443", wantDNS: []string{"localhost"}, wantIPs: loopback},
		{name: "any address", listen: ":8443", wantDNS: []string{"localhost"}, wantIPs: loopback},
		{name: "listen IP", listen: "10.0.0.7:8443", wantDNS: []string{"localhost"}, wantIPs: append(loopback, net.ParseIP("10.0.0.7"))},
		{name: "listen host", listen: "ca.example.org:8443", wantDNS: []string{"localhost", "ca.example.org"}, wantIPs: loopback},
		{
			name: "service and istio names", listen: ":8443",
			extra:   []string{"certmesh.certmesh.svc", "certmesh.certmesh.svc.cluster.local", wire.IstioCAServiceName},
			wantDNS: []string{"localhost", "certmesh.certmesh.svc", "certmesh.certmesh.svc.cluster.local", "istiod.istio-system.svc"}, wantIPs: loopback,
		},
		{
			name: "each name once", listen: "ca.example.org:8443", extra: []string{"ca.example.org", "localhost", "x.example.org", "x.example.org"},
			wantDNS: []string{"localhost", "ca.example.org", "x.example.org"}, wantIPs: loopback,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dns, ips := servingNames(tc.listen, tc.extra)
			require.Equal(t, tc.wantDNS, dns)
			require.Equal(t, tc.wantIPs, ips)
		})
	}
}

func TestServerDNSNamesChecked(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	for _, bad := range []string{"", "*.example.org", "Upper.example.org", "a..b", "example.org."} {
		t.Run(bad, func(t *testing.T) {
			cfg := Config{Dir: t.TempDir(), TrustDomain: td, ServerDNSNames: []string{bad}}
			require.Error(t, cfg.withDefaults())
		})
	}
}

// TestServingCertificateNames checks the certificate a caller receives: it
// verifies for Istio's CA name and the Service's, as pilot-agent and
// certmesh's own agents check it.
func TestServingCertificateNames(t *testing.T) {
	srv, err := New(Config{Dir: t.TempDir(), TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Listen: "127.0.0.1:0",
		ServerDNSNames: []string{"certmesh.certmesh.svc", wire.IstioCAServiceName}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	cert, err := srv.servingCert().GetCertificate(nil)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	for _, name := range []string{"localhost", "127.0.0.1", "certmesh.certmesh.svc", wire.IstioCAServiceName} {
		require.NoError(t, leaf.VerifyHostname(name), name)
	}
	require.Error(t, leaf.VerifyHostname("other.istio-system.svc"))
}
