package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/url"
	"time"
)

// leafFields is everything a leaf SVID carries. Sign fills it once; it
// becomes either an x509.Certificate template for CreateCertificate or, on
// the fast path, the DER of encodeLeafTBS. Both start from the same value so
// the two paths cannot drift apart, and the tests compare their bytes.
type leafFields struct {
	Serial      *big.Int
	NotBefore   time.Time
	NotAfter    time.Time
	KeyUsage    x509.KeyUsage
	URI         *url.URL
	DNSNames    []string
	IPAddresses []net.IP
	PublicKey   crypto.PublicKey
}

// template is the x509.Certificate that CreateCertificate turns into the same
// DER as the fast path. Every SVID is both a TLS server and a TLS client.
func (f *leafFields) template() *x509.Certificate {
	t := &x509.Certificate{
		SerialNumber:          f.Serial,
		NotBefore:             f.NotBefore,
		NotAfter:              f.NotAfter,
		KeyUsage:              f.KeyUsage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              f.DNSNames,
		IPAddresses:           f.IPAddresses,
	}
	if f.URI != nil {
		t.URIs = []*url.URL{f.URI}
	}
	return t
}

// createLeaf signs f with the authority's intermediate.
//
// For an in-memory ECDSA P-256 or P-384 intermediate key it encodes the
// certificate itself and signs the TBSCertificate once. x509.CreateCertificate
// would also verify the signature it just made (to catch a faulty
// crypto.Signer such as an HSM); that check costs more than the signature and
// buys nothing here, because the key is a software *ecdsa.PrivateKey whose
// signing we call directly: there is no external signer that could return a
// bad signature. Everything else — RSA or Ed25519 intermediates, other curves,
// any key behind a crypto.Signer, and any field the encoder does not handle
// exactly as Go would — still goes through x509.CreateCertificate.
func createLeaf(rnd io.Reader, f *leafFields, a *Authority) ([]byte, error) {
	if s, ok := fastSignerFor(a); ok {
		if der, fast, err := s.sign(rnd, f, a.Intermediate); fast {
			return der, err
		}
	}
	return x509.CreateCertificate(rnd, f.template(), a.Intermediate, f.PublicKey, a.IntermediateKey)
}

// fastSigner is an intermediate key the fast path may sign with.
type fastSigner struct {
	key    *ecdsa.PrivateKey
	digest func([]byte) []byte
	sigAlg []byte // DER AlgorithmIdentifier, as CreateCertificate picks it
}

func sha256Digest(b []byte) []byte { d := sha256.Sum256(b); return d[:] }
func sha384Digest(b []byte) []byte { d := sha512.Sum384(b); return d[:] }

// fastSignerFor picks the signature algorithm CreateCertificate would pick by
// default for the key (ecdsa-with-SHA256 for P-256, ecdsa-with-SHA384 for
// P-384). Anything else is left to CreateCertificate. The key is checked
// against the certificate as CreateCertificate does (assemble checked it
// already; this is cheap insurance against a hand-built Authority).
func fastSignerFor(a *Authority) (fastSigner, bool) {
	key, ok := a.IntermediateKey.(*ecdsa.PrivateKey)
	if !ok || key == nil || a.Intermediate == nil || len(a.Intermediate.RawSubject) == 0 {
		return fastSigner{}, false
	}
	if !key.PublicKey.Equal(a.Intermediate.PublicKey) {
		return fastSigner{}, false
	}
	switch key.Curve {
	case elliptic.P256():
		return fastSigner{key: key, digest: sha256Digest, sigAlg: derECDSAWithSHA256}, true
	case elliptic.P384():
		return fastSigner{key: key, digest: sha384Digest, sigAlg: derECDSAWithSHA384}, true
	}
	return fastSigner{}, false
}

// sign encodes f and signs it: Certificate ::= SEQUENCE { tbsCertificate,
// signatureAlgorithm, signatureValue BIT STRING }. The TBSCertificate is
// written in place inside the certificate's buffer. fast is false when f is
// a template for CreateCertificate instead.
func (s fastSigner) sign(rnd io.Reader, f *leafFields, issuer *x509.Certificate) (der []byte, fast bool, err error) {
	d := derBuf{b: make([]byte, 0, leafSizeHint(f, issuer)+len(s.sigAlg)+128)}
	cert := d.open(tagSequence)
	tbsStart := len(d.b)
	if !encodeLeafTBSTo(&d, f, issuer, s.sigAlg) {
		return nil, false, nil
	}
	sig, err := ecdsa.SignASN1(rnd, s.key, s.digest(d.b[tbsStart:]))
	if err != nil {
		return nil, true, err
	}
	d.b = append(d.b, s.sigAlg...)
	d.addBitString(sig)
	d.close(cert)
	if d.failed {
		return nil, false, nil
	}
	return d.b, true, nil
}

// DER constants. OIDs are the contents of an OBJECT IDENTIFIER.
var (
	derECDSAWithSHA256 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	derECDSAWithSHA384 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}
	derEmptyName       = []byte{0x30, 0x00}
	// derVersion3 is [0] EXPLICIT INTEGER 2.
	derVersion3 = []byte{0xa0, 0x03, 0x02, 0x01, 0x02}
	// derExtKeyUsageSVID is the extKeyUsage extension, not critical:
	// SEQUENCE { serverAuth, clientAuth }.
	derExtKeyUsageSVID = []byte{
		0x30, 0x1d, 0x06, 0x03, 0x55, 0x1d, 0x25, 0x04, 0x16, 0x30, 0x14,
		0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
		0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02,
	}
	// derBasicConstraintsLeaf is basicConstraints, critical, with cA
	// FALSE and no pathLen: both are DEFAULT/OPTIONAL, so an empty SEQUENCE.
	derBasicConstraintsLeaf = []byte{0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x02, 0x30, 0x00}

	oidPublicKeyECDSA   = []byte{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01}
	oidCurveP256        = []byte{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	oidCurveP384        = []byte{0x2b, 0x81, 0x04, 0x00, 0x22}
	oidPublicKeyEd25519 = []byte{0x2b, 0x65, 0x70}
	oidExtKeyUsage      = []byte{0x55, 0x1d, 0x0f}
	oidExtAuthorityKey  = []byte{0x55, 0x1d, 0x23}
	oidExtSubjectAlt    = []byte{0x55, 0x1d, 0x11}
)

// encodeLeafTBS returns the TBSCertificate that x509.CreateCertificate
// would build for f.template() under issuer with sigAlg, byte for byte, or
// false when f has something the encoder does not reproduce (a nil or
// negative serial, a time GeneralizedTime cannot hold, a name that is not
// IA5, a public key Go cannot marshal): the caller then uses
// CreateCertificate, which gives its usual answer or error.
func encodeLeafTBS(f *leafFields, issuer *x509.Certificate, sigAlg []byte) ([]byte, bool) {
	d := derBuf{b: make([]byte, 0, leafSizeHint(f, issuer))}
	if !encodeLeafTBSTo(&d, f, issuer, sigAlg) {
		return nil, false
	}
	return d.b, true
}

// encodeLeafTBSTo appends the TBSCertificate to d. The layout follows
// CreateCertificate in Go 1.26: version 3, serial, the issuer's raw subject,
// UTCTime before 2050 and GeneralizedTime from 2050, an empty subject, then
// the extensions keyUsage (critical), extKeyUsage, basicConstraints
// (critical, not a CA), authorityKeyId (the issuer's subjectKeyId) and
// subjectAltName (critical because the subject is empty).
func encodeLeafTBSTo(d *derBuf, f *leafFields, issuer *x509.Certificate, sigAlg []byte) bool {
	var uri string
	if f.URI != nil {
		uri = f.URI.String()
	}
	if f.Serial == nil || f.Serial.Sign() < 0 || len(issuer.RawSubject) == 0 || !namesAreIA5(f.DNSNames, uri) {
		return false
	}
	tbs := d.open(tagSequence)
	d.b = append(d.b, derVersion3...)
	d.addSerial(f.Serial)
	d.b = append(d.b, sigAlg...)
	d.b = append(d.b, issuer.RawSubject...)
	validity := d.open(tagSequence)
	if !d.addTime(f.NotBefore) || !d.addTime(f.NotAfter) {
		return false
	}
	d.close(validity)
	d.b = append(d.b, derEmptyName...)
	if !d.addPublicKey(f.PublicKey) {
		return false
	}
	exts := d.open(tagExtensions)
	list := d.open(tagSequence)
	if f.KeyUsage != 0 {
		ext := d.openExtension(oidExtKeyUsage, true)
		d.addKeyUsage(f.KeyUsage)
		d.closeExtension(ext)
	}
	d.b = append(d.b, derExtKeyUsageSVID...)
	d.b = append(d.b, derBasicConstraintsLeaf...)
	// CreateCertificate takes the issuer's subjectKeyId unless issuer and
	// subject names are equal (both empty here).
	if aki := issuer.SubjectKeyId; len(aki) > 0 && !bytes.Equal(issuer.RawSubject, derEmptyName) {
		ext := d.openExtension(oidExtAuthorityKey, false)
		seq := d.open(tagSequence)
		d.add(tagContext0, aki)
		d.close(seq)
		d.closeExtension(ext)
	}
	if len(f.DNSNames) > 0 || len(f.IPAddresses) > 0 || f.URI != nil {
		ext := d.openExtension(oidExtSubjectAlt, true)
		d.addSAN(f, uri)
		d.closeExtension(ext)
	}
	d.close(list)
	d.close(exts)
	d.close(tbs)
	return !d.failed
}

// leafSizeHint is enough room for the TBSCertificate of an ordinary leaf,
// so that encoding does not grow the buffer.
func leafSizeHint(f *leafFields, issuer *x509.Certificate) int {
	n := 384 + len(issuer.RawSubject) + len(issuer.SubjectKeyId)
	for _, name := range f.DNSNames {
		n += len(name) + 4
	}
	n += 20 * len(f.IPAddresses)
	if f.URI != nil {
		n += len(f.URI.Path) + len(f.URI.Host) + 32
	}
	return n
}

// addSAN writes the subjectAltName's SEQUENCE of GeneralNames: DNS names,
// then IP addresses, then the URI, as Go orders them.
func (d *derBuf) addSAN(f *leafFields, uri string) {
	names := d.open(tagSequence)
	for _, name := range f.DNSNames {
		d.addString(tagNameDNS, name)
	}
	for _, ip := range f.IPAddresses {
		// IPv4 addresses are always written in 4 bytes, as Go does.
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		d.add(tagNameIP, ip)
	}
	if f.URI != nil {
		d.addString(tagNameURI, uri)
	}
	d.close(names)
}

// namesAreIA5 is Go's isIA5String over every name: Go refuses a name with a
// rune above ASCII. A byte at or above 0x80 is either part of such a rune or
// invalid UTF-8 (RuneError, also refused), so checking bytes is the same test.
func namesAreIA5(dnsNames []string, uri string) bool {
	isIA5 := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return false
			}
		}
		return true
	}
	for _, name := range dnsNames {
		if !isIA5(name) {
			return false
		}
	}
	return isIA5(uri)
}

// addPublicKey writes the SubjectPublicKeyInfo CreateCertificate embeds for
// pub. P-256, P-384 and Ed25519 keys are written directly; other keys (RSA,
// P-521, …) through x509.MarshalPKIXPublicKey, which encodes them as
// CreateCertificate does. False when Go cannot marshal the key.
func (d *derBuf) addPublicKey(pub crypto.PublicKey) bool {
	var curve, key []byte
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil {
			return false
		}
		switch k.Curve {
		case elliptic.P256():
			curve = oidCurveP256
		case elliptic.P384():
			curve = oidCurveP384
		default:
			return d.addPKIX(pub)
		}
		var err error
		if key, err = k.Bytes(); err != nil {
			return false
		}
	case ed25519.PublicKey:
		key = k // as Go does, whatever its length (keyUsageFor refuses a bad one)
	default:
		return d.addPKIX(pub)
	}
	spki := d.open(tagSequence)
	alg := d.open(tagSequence)
	if curve != nil {
		d.add(tagOID, oidPublicKeyECDSA)
		d.add(tagOID, curve)
	} else {
		d.add(tagOID, oidPublicKeyEd25519)
	}
	d.close(alg)
	d.addBitString(key)
	d.close(spki)
	return true
}

func (d *derBuf) addPKIX(pub crypto.PublicKey) bool {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return false
	}
	d.b = append(d.b, spki...)
	return true
}
