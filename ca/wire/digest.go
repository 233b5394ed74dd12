package wire

import (
	"crypto/sha256"
	"crypto/x509"
)

// BundleDigest identifies a set of roots: SHA-256 over their concatenated
// DER, in order — the Workload API's own encoding of an X.509 bundle. Agents
// and the CA compare digests to know who holds which bundle.
func BundleDigest(roots []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, r := range roots {
		h.Write(r.Raw)
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// DigestDER is BundleDigest of roots already concatenated as DER.
func DigestDER(der []byte) [32]byte { return sha256.Sum256(der) }
