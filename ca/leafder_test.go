package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
)

var leafTestTD = spiffeid.RequireTrustDomainFromString("example.org")

// testAuthority makes a real authority as NewAuthority does for a CA.
func testAuthority(t testing.TB, kt KeyType) *Authority {
	t.Helper()
	a, err := NewAuthority(AuthorityParams{TrustDomain: leafTestTD, KeyType: kt, Now: time.Now(), Rand: rand.Reader})
	require.NoError(t, err)
	return a
}

// oddAuthority is an intermediate unlike the ones certmesh makes: tmpl
// decides the subject and subjectKeyId, which change the leaf's issuer and
// authorityKeyId.
func oddAuthority(t testing.TB, tmpl *x509.Certificate) *Authority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber = big.NewInt(7)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	// CreateCertificate sets a subjectKeyId on every CA; drop it to test an
	// issuer without one.
	if tmpl.SubjectKeyId == nil {
		cert.SubjectKeyId = nil
	}
	return &Authority{Intermediate: cert, IntermediateKey: key}
}

type leafKeys struct {
	name string
	pub  crypto.PublicKey
}

func testLeafKeys(t testing.TB) []leafKeys {
	t.Helper()
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	require.NoError(t, err)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ed, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return []leafKeys{{"p256", p256.Public()}, {"p384", p384.Public()}, {"p521", p521.Public()}, {"rsa2048", rsa2048.Public()}, {"ed25519", ed}}
}

// tbsOf is the TBSCertificate inside a certificate's DER (read with
// encoding/asn1 rather than x509.ParseCertificate, which refuses some of the
// odd certificates the fuzz target makes, such as a 3-byte IP address).
func tbsOf(t testing.TB, der []byte) []byte {
	t.Helper()
	return certParts(t, der).TBS.FullBytes
}

// rawCertificate is Certificate ::= SEQUENCE { tbsCertificate,
// signatureAlgorithm, signatureValue }, each part kept as written.
type rawCertificate struct {
	TBS       asn1.RawValue
	Algorithm asn1.RawValue
	Signature asn1.BitString
}

// certParts splits a certificate's DER into its three parts.
func certParts(t testing.TB, der []byte) rawCertificate {
	t.Helper()
	var cert rawCertificate
	rest, err := asn1.Unmarshal(der, &cert)
	require.NoError(t, err)
	require.Empty(t, rest)
	return cert
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	require.NoError(t, err)
	return u
}

func bigPow2(n uint) *big.Int { return new(big.Int).Lsh(big.NewInt(1), n) }

// leafVariants are templates that must encode exactly as CreateCertificate
// encodes them. Each starts from a typical SVID and changes one thing.
func leafVariants(t testing.TB) []struct {
	name string
	edit func(*leafFields)
} {
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + ".example"
	var manyDNS []string
	for i := range 40 {
		manyDNS = append(manyDNS, strings.Repeat("x", i)+".svc.cluster.local")
	}
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err)
		return tm
	}
	return []struct {
		name string
		edit func(*leafFields)
	}{
		{"typical SVID", func(*leafFields) {}},
		{"odd ID characters", func(f *leafFields) {
			f.URI = spiffeid.RequireFromString("spiffe://a-b.c_d.example.org/ns/-._/sa/" + strings.Repeat("z9.", 60)).URL()
		}},
		{"URI needing escapes", func(f *leafFields) {
			f.URI = &url.URL{Scheme: "spiffe", Host: "example.org", Path: "/a b/%/?#/ü"}
		}},
		{"URI with userinfo, query and fragment", func(f *leafFields) {
			f.URI = mustURL(t, "spiffe://u:p@example.org:8443/x?y=1&z=%20#frag")
		}},
		{"no URI", func(f *leafFields) { f.URI = nil }},
		{"no names at all", func(f *leafFields) { f.URI = nil; f.DNSNames = nil }},
		{"one DNS name", func(f *leafFields) { f.DNSNames = []string{"web.default.svc"} }},
		{"DNS names with wildcard, empty, upper case and controls", func(f *leafFields) {
			f.DNSNames = []string{"*.example.org", "", "UPPER.Example", "nul\x00tab\t\x7f", long}
		}},
		{"forty DNS names (long lengths)", func(f *leafFields) { f.DNSNames = manyDNS }},
		{"a 70 kB DNS name (three length octets)", func(f *leafFields) { f.DNSNames = []string{strings.Repeat("d", 70_000)} }},
		{"IP addresses", func(f *leafFields) {
			f.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("::ffff:10.0.0.1"),
				net.IPv4(192, 168, 1, 1).To4(), net.ParseIP("2001:db8::1")}
		}},
		{"odd IP lengths", func(f *leafFields) { f.IPAddresses = []net.IP{nil, {1, 2, 3}, {1, 2, 3, 4, 5}} }},
		{"DNS, IP and URI together", func(f *leafFields) {
			f.DNSNames = []string{"a.example", "b.example"}
			f.IPAddresses = []net.IP{net.ParseIP("10.1.2.3")}
		}},
		{"serial 0", func(f *leafFields) { f.Serial = big.NewInt(0) }},
		{"serial 127", func(f *leafFields) { f.Serial = big.NewInt(127) }},
		{"serial 128 (leading zero)", func(f *leafFields) { f.Serial = big.NewInt(128) }},
		{"serial 2^127", func(f *leafFields) { f.Serial = bigPow2(127) }},
		{"serial 2^160-1", func(f *leafFields) { f.Serial = new(big.Int).Sub(bigPow2(160), big.NewInt(1)) }},
		{"serial 2^300", func(f *leafFields) { f.Serial = bigPow2(300) }},
		{"UTCTime edges", func(f *leafFields) {
			f.NotBefore, f.NotAfter = utc("1950-01-01T00:00:00Z"), utc("2049-12-31T23:59:59.999999999Z")
		}},
		{"GeneralizedTime edges", func(f *leafFields) {
			f.NotBefore, f.NotAfter = utc("1949-12-31T23:59:59Z"), utc("2050-01-01T00:00:00Z")
		}},
		{"far times", func(f *leafFields) {
			f.NotBefore, f.NotAfter = utc("0000-01-01T00:00:00Z"), utc("9999-12-31T23:59:59Z")
		}},
		{"times in a zone crossing a year", func(f *leafFields) {
			zone := time.FixedZone("x", -(5*3600 + 30*60))
			f.NotBefore = time.Date(2049, 12, 31, 20, 0, 0, 0, zone) // 2050 in UTC
			f.NotAfter = time.Date(2050, 1, 1, 2, 0, 0, 5, time.FixedZone("y", 14*3600))
		}},
		{"NotAfter before NotBefore", func(f *leafFields) { f.NotBefore, f.NotAfter = f.NotAfter, f.NotBefore }},
		{"RSA key usage", func(f *leafFields) { f.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment }},
		{"every key usage", func(f *leafFields) { f.KeyUsage = 0x1ff }},
		{"decipherOnly alone", func(f *leafFields) { f.KeyUsage = x509.KeyUsageDecipherOnly }},
		{"no key usage", func(f *leafFields) { f.KeyUsage = 0 }},
		{"key usage beyond the defined bits", func(f *leafFields) { f.KeyUsage = 0x10000 }},
	}
}

func typicalFields(pub crypto.PublicKey) *leafFields {
	now := time.Now()
	return &leafFields{
		Serial: bigPow2(100), NotBefore: now.Add(-LeafBackdate), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, PublicKey: pub,
		URI: spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web").URL(),
	}
}

// TestLeafTBSMatchesCreateCertificate is the contract of the fast path: for
// every template it accepts, its TBSCertificate is the one CreateCertificate
// builds, byte for byte (ECDSA signatures are random; TBS bytes are not).
func TestLeafTBSMatchesCreateCertificate(t *testing.T) {
	issuers := []struct {
		name string
		a    *Authority
	}{
		{"p256 intermediate", testAuthority(t, KeyECP256)},
		{"p384 intermediate", testAuthority(t, KeyECP384)},
		{"intermediate without subjectKeyId", oddAuthority(t, &x509.Certificate{Subject: pkix.Name{CommonName: "no skid"}})},
		{"intermediate with empty subject", oddAuthority(t, &x509.Certificate{SubjectKeyId: []byte{1, 2, 3}})},
		{"intermediate with a long subject and skid", oddAuthority(t, &x509.Certificate{
			Subject:      pkix.Name{CommonName: strings.Repeat("n", 200), Organization: []string{"o", "p"}},
			SubjectKeyId: []byte(strings.Repeat("k", 130)),
		})},
	}
	keys := testLeafKeys(t)
	for _, is := range issuers {
		s, ok := fastSignerFor(is.a)
		require.True(t, ok, is.name)
		for _, k := range keys {
			for _, v := range leafVariants(t) {
				t.Run(is.name+"/"+k.name+"/"+v.name, func(t *testing.T) {
					f := typicalFields(k.pub)
					v.edit(f)
					want, err := x509.CreateCertificate(rand.Reader, f.template(), is.a.Intermediate, f.PublicKey, is.a.IntermediateKey)
					require.NoError(t, err)
					got, ok := encodeLeafTBS(f, is.a.Intermediate, s.sigAlg)
					require.True(t, ok, "the fast path must take this template")
					require.Equal(t, tbsOf(t, want), got)
				})
			}
		}
	}
}

// TestDERLengths checks both ways of writing a length (header for a
// primitive, open/close for a constructed value) against encoding/asn1 at
// each boundary of the long form.
func TestDERLengths(t *testing.T) {
	for _, n := range []int{0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffff, 0x1000000} {
		content := make([]byte, n)
		want, err := asn1.Marshal(asn1.RawValue{Tag: asn1.TagOctetString, Bytes: content})
		require.NoError(t, err)

		var prim derBuf
		prim.add(tagOctetString, content)
		require.False(t, prim.failed)
		require.Equal(t, want, prim.b, "primitive, %d octets", n)

		cons := derBuf{b: []byte{0xee}} // something before, as inside a TBS
		start := cons.open(tagOctetString)
		cons.b = append(cons.b, content...)
		cons.close(start)
		require.False(t, cons.failed)
		require.Equal(t, append([]byte{0xee}, want...), cons.b, "constructed, %d octets", n)
	}
}

// TestLeafTBSRefusesWhatGoRefuses checks the other half of the contract: a
// template the encoder turns down goes to CreateCertificate, which refuses
// it too, so a caller sees Go's error and never a certificate Go would not
// have made.
func TestLeafTBSRefusesWhatGoRefuses(t *testing.T) {
	a := testAuthority(t, KeyECP256)
	s, ok := fastSignerFor(a)
	require.True(t, ok)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tests := []struct {
		name string
		edit func(*leafFields)
	}{
		{"negative serial", func(f *leafFields) { f.Serial = big.NewInt(-1) }},
		{"year 10000", func(f *leafFields) { f.NotAfter = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"year -1", func(f *leafFields) { f.NotBefore = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"non-ASCII DNS name", func(f *leafFields) { f.DNSNames = []string{"ok.example", "bücher.example"} }},
		{"invalid UTF-8 DNS name", func(f *leafFields) { f.DNSNames = []string{"\xff"} }},
		{"non-ASCII URI", func(f *leafFields) { f.URI = &url.URL{Scheme: "spiffe", Opaque: "ü"} }},
		{"unsupported curve", func(f *leafFields) {
			f.PublicKey = &ecdsa.PublicKey{Curve: elliptic.P224().Params(), X: big.NewInt(1), Y: big.NewInt(1)}
		}},
		{"point not on the curve", func(f *leafFields) {
			f.PublicKey = &ecdsa.PublicKey{Curve: elliptic.P256(), X: big.NewInt(1), Y: big.NewInt(1)}
		}},
		{"unknown key type", func(f *leafFields) { f.PublicKey = "not a key" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := typicalFields(key.Public())
			tt.edit(f)
			_, ok := encodeLeafTBS(f, a.Intermediate, s.sigAlg)
			require.False(t, ok)
			require.NotPanics(t, func() {
				_, err = x509.CreateCertificate(rand.Reader, f.template(), a.Intermediate, f.PublicKey, a.IntermediateKey)
			})
			require.Error(t, err)
		})
	}
	// A nil serial is not an error for CreateCertificate (it makes one up),
	// but it is for the fast path, which never invents a serial.
	f := typicalFields(key.Public())
	f.Serial = nil
	_, ok = encodeLeafTBS(f, a.Intermediate, s.sigAlg)
	require.False(t, ok)
}

// TestKeyUsageForRefusesMalformedKeys: CreateCertificate would panic on a
// nil key and sign a short Ed25519 key as it is, so Sign refuses both first.
func TestKeyUsageForRefusesMalformedKeys(t *testing.T) {
	for _, pub := range []crypto.PublicKey{nil, (*ecdsa.PublicKey)(nil), (*rsa.PublicKey)(nil), &rsa.PublicKey{}, ed25519.PublicKey{1, 2, 3}} {
		_, err := keyUsageFor(pub)
		require.ErrorIs(t, err, ErrUnsupportedKey, "%T", pub)
	}
}

// TestCreateLeafVerifies signs through createLeaf with each intermediate key
// type — P-256 and P-384 take the fast path, RSA goes through
// CreateCertificate — and checks the result with x509 and go-spiffe.
func TestCreateLeafVerifies(t *testing.T) {
	tests := []struct {
		kt      KeyType
		fast    bool
		sigAlgo x509.SignatureAlgorithm
	}{
		{KeyECP256, true, x509.ECDSAWithSHA256},
		{KeyECP384, true, x509.ECDSAWithSHA384},
		{KeyRSA2048, false, x509.SHA256WithRSA},
	}
	keys := testLeafKeys(t)
	for _, tt := range tests {
		a := testAuthority(t, tt.kt)
		_, fast := fastSignerFor(a)
		require.Equal(t, tt.fast, fast, "fast path for %s", tt.kt)
		bundle := x509bundle.FromX509Authorities(leafTestTD, []*x509.Certificate{a.Root})
		for _, k := range keys {
			t.Run(string(tt.kt)+"/"+k.name, func(t *testing.T) {
				f := typicalFields(k.pub)
				f.DNSNames = []string{"web.default.svc"}
				der, err := createLeaf(rand.Reader, f, a)
				require.NoError(t, err)
				leaf, err := x509.ParseCertificate(der)
				require.NoError(t, err)
				require.Equal(t, tt.sigAlgo, leaf.SignatureAlgorithm)
				require.NoError(t, leaf.CheckSignatureFrom(a.Intermediate))
				require.True(t, f.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey))

				want, err := x509.CreateCertificate(rand.Reader, f.template(), a.Intermediate, f.PublicKey, a.IntermediateKey)
				require.NoError(t, err)
				require.Equal(t, tbsOf(t, want), leaf.RawTBSCertificate)

				chain := append([][]byte{der}, a.chainAfterLeaf...)
				id, verified, err := x509svid.ParseAndVerify(chain[:len(chain)-1], bundle)
				require.NoError(t, err)
				require.Equal(t, "spiffe://example.org/ns/default/sa/web", id.String())
				require.NotEmpty(t, verified)
			})
		}
	}
}

// TestSignMatchesCreateCertificate checks Sign end to end: the leaf it
// returns has the TBSCertificate CreateCertificate makes from the same
// template (rebuilt from the leaf's serial, times and key).
func TestSignMatchesCreateCertificate(t *testing.T) {
	for _, kt := range []KeyType{KeyECP256, KeyECP384, KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			c, err := New(Config{Dir: t.TempDir(), TrustDomain: leafTestTD, KeyType: kt})
			require.NoError(t, err)
			for _, k := range testLeafKeys(t) {
				p := SignParams{PublicKey: k.pub, ID: spiffeid.RequireFromString("spiffe://example.org/ns/x/sa/y"),
					DNSNames: []string{"y.x.svc"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
				l, err := c.Sign(p)
				require.NoError(t, err)
				leaf, err := l.Certificate()
				require.NoError(t, err)
				usage, err := keyUsageFor(k.pub)
				require.NoError(t, err)
				f := &leafFields{Serial: l.Serial, NotBefore: leaf.NotBefore, NotAfter: l.NotAfter, KeyUsage: usage,
					URI: p.ID.URL(), DNSNames: p.DNSNames, IPAddresses: p.IPAddresses, PublicKey: k.pub}
				a := c.active.Load()
				want, err := x509.CreateCertificate(rand.Reader, f.template(), a.Intermediate, f.PublicKey, a.IntermediateKey)
				require.NoError(t, err)
				require.Equal(t, tbsOf(t, want), leaf.RawTBSCertificate, k.name)
				require.NoError(t, leaf.CheckSignatureFrom(a.Intermediate))
			}
		})
	}
}
