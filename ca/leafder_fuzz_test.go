package ca

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzLeafTBS compares the fast encoder with CreateCertificate on arbitrary
// serials, times, names, key usages and keys: whenever the encoder accepts a
// template its bytes must be CreateCertificate's, and it may turn a template
// down only when CreateCertificate refuses it too.
func FuzzLeafTBS(f *testing.F) {
	issuers := []*Authority{testAuthority(f, KeyECP256), testAuthority(f, KeyECP384)}
	signers := make([]fastSigner, len(issuers))
	for i, a := range issuers {
		s, ok := fastSignerFor(a)
		require.True(f, ok)
		signers[i] = s
	}
	keys := testLeafKeys(f)
	now := time.Now()
	f.Add([]byte{0x42}, false, now.Unix(), now.Add(time.Hour).Unix(), int64(0), int32(0), "", []byte{}, "spiffe://example.org/ns/a/sa/b", uint16(x509.KeyUsageDigitalSignature), uint8(0))
	f.Add([]byte{0x80, 0, 1}, false, int64(-631152000), int64(2524608000), int64(999999999), int32(-3600), "a.example,*.b,", []byte{4, 127, 0, 0, 1, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "spiffe://example.org/x y?z#w", uint16(5), uint8(7))
	f.Add([]byte{}, true, int64(253402300800), int64(-62135596801), int64(1), int32(50400), "é", []byte{3, 1, 2, 3}, "%zz", uint16(0x1ff), uint8(3))
	f.Fuzz(func(t *testing.T, serial []byte, negative bool, nb, na, nsec int64, zone int32, dns string, ips []byte, uri string, ku uint16, pick uint8) {
		fields := &leafFields{
			Serial:    new(big.Int).SetBytes(serial),
			NotBefore: time.Unix(nb, nsec).In(time.FixedZone("z", int(zone%(24*3600)))),
			NotAfter:  time.Unix(na, -nsec).UTC(),
			KeyUsage:  x509.KeyUsage(ku),
			PublicKey: keys[int(pick>>1)%len(keys)].pub,
		}
		if negative {
			fields.Serial.Neg(fields.Serial)
		}
		if dns != "" {
			fields.DNSNames = strings.Split(dns, ",")
		}
		// ips is a sequence of length-prefixed addresses.
		for len(ips) > 0 {
			n := min(int(ips[0]), len(ips)-1)
			fields.IPAddresses = append(fields.IPAddresses, net.IP(ips[1:1+n]))
			ips = ips[1+n:]
		}
		if u, err := url.Parse(uri); err == nil && uri != "" {
			fields.URI = u
		}
		a, s := issuers[pick&1], signers[pick&1]
		want, err := x509.CreateCertificate(rand.Reader, fields.template(), a.Intermediate, fields.PublicKey, a.IntermediateKey)
		got, ok := encodeLeafTBS(fields, a.Intermediate, s.sigAlg)
		if !ok {
			require.Error(t, err, "the encoder refused a template CreateCertificate accepts")
			return
		}
		require.NoError(t, err, "the encoder accepted a template CreateCertificate refuses")
		require.Equal(t, tbsOf(t, want), got)

		// The signing path writes the same TBS inside the certificate and
		// signs exactly those bytes.
		der, fast, err := s.sign(rand.Reader, fields, a.Intermediate)
		require.NoError(t, err)
		require.True(t, fast)
		cert := certParts(t, der)
		require.Equal(t, got, []byte(cert.TBS.FullBytes))
		require.Equal(t, s.sigAlg, []byte(cert.Algorithm.FullBytes))
		require.True(t, ecdsa.VerifyASN1(&s.key.PublicKey, s.digest(got), cert.Signature.RightAlign()))
	})
}
