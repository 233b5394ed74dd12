package sds

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
)

// DER pieces of a P-256 CSR with an empty subject and no attributes, signed
// ecdsa-with-SHA256: what x509.CreateCertificateRequest makes for the
// agent's keys, byte for byte.
var (
	// SEQUENCE (CertificationRequestInfo, 98 bytes) { INTEGER 0, empty Name,
	// then SubjectPublicKeyInfo: SEQUENCE { id-ecPublicKey, prime256v1 },
	// BIT STRING of the 65-byte point }.
	csrInfoPrefix = []byte{0x30, 0x62, 0x02, 0x01, 0x00, 0x30, 0x00,
		0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
		0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00}
	csrNoAttributes = []byte{0xa0, 0x00}
	ecdsaWithSHA256 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
)

// newCSR makes the DER CSR for key. For a P-256 key it writes the DER
// directly: x509.CreateCertificateRequest builds it by reflection and then
// verifies the signature it has just made, in case the signer is faulty —
// an ECDSA verify per SVID, which the agent's own in-memory key does not
// need and the CA does anyway (proof of possession). Other keys go
// through x509.
func newCSR(key crypto.Signer) ([]byte, error) {
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	}
	point, err := ec.PublicKey.Bytes()
	if err != nil || len(point) != 65 {
		return nil, fmt.Errorf("sds: CSR public key: %v", err)
	}
	info := make([]byte, 0, len(csrInfoPrefix)+len(point)+len(csrNoAttributes))
	info = append(append(append(info, csrInfoPrefix...), point...), csrNoAttributes...)
	digest := sha256.Sum256(info)
	sig, err := ecdsa.SignASN1(rand.Reader, ec, digest[:])
	if err != nil {
		return nil, err
	}
	body := len(info) + len(ecdsaWithSHA256) + 3 + len(sig) // at most 187
	out := make([]byte, 0, 3+body)
	out = append(out, 0x30, 0x81, byte(body))
	out = append(append(out, info...), ecdsaWithSHA256...)
	out = append(out, 0x03, byte(len(sig)+1), 0x00)
	return append(out, sig...), nil
}
