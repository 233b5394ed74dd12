package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
)

// KeyType names a key algorithm and size for CA keys.
type KeyType string

// The key types a CA can create. ECDSA P-256 is the default: small, fast and
// accepted by every TLS stack certmesh talks to.
const (
	KeyECP256  KeyType = "ec-p256"
	KeyECP384  KeyType = "ec-p384"
	KeyRSA2048 KeyType = "rsa-2048"
	KeyRSA3072 KeyType = "rsa-3072"
	KeyRSA4096 KeyType = "rsa-4096"
)

// ErrUnknownKeyType is returned for a key type name certmesh does not know.
var ErrUnknownKeyType = errors.New("ca: unknown key type")

// ParseKeyType checks a key type name (from a flag or config).
func ParseKeyType(s string) (KeyType, error) {
	switch k := KeyType(s); k {
	case KeyECP256, KeyECP384, KeyRSA2048, KeyRSA3072, KeyRSA4096:
		return k, nil
	case "":
		return KeyECP256, nil
	}
	return "", fmt.Errorf("%w %q (want ec-p256, ec-p384, rsa-2048, rsa-3072 or rsa-4096)", ErrUnknownKeyType, s)
}

// GenerateKey makes a new private key of type k from rnd.
func GenerateKey(k KeyType, rnd io.Reader) (crypto.Signer, error) {
	switch k {
	case KeyECP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rnd)
	case KeyECP384:
		return ecdsa.GenerateKey(elliptic.P384(), rnd)
	case KeyRSA2048:
		return rsa.GenerateKey(rnd, 2048)
	case KeyRSA3072:
		return rsa.GenerateKey(rnd, 3072)
	case KeyRSA4096:
		return rsa.GenerateKey(rnd, 4096)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKeyType, k)
}

// KeyTypeOf names the type of a CA public key, so that a renewal or a
// rotation makes a key of the same type as the one it replaces.
func KeyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return KeyECP256, nil
		case elliptic.P384():
			return KeyECP384, nil
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return KeyRSA2048, nil
		case 3072:
			return KeyRSA3072, nil
		case 4096:
			return KeyRSA4096, nil
		}
	}
	return "", fmt.Errorf("%w: %T", ErrUnknownKeyType, pub)
}

// EncodeKeyPEM encodes a private key as PKCS#8 PEM.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ErrBadKeyFile is returned for a key file that is not a usable private key.
var ErrBadKeyFile = errors.New("ca: not a usable private key")

// ParseKeyPEM reads a PKCS#8, PKCS#1 (RSA) or SEC 1 (EC) PEM private key.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrBadKeyFile)
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: PEM type %q", ErrBadKeyFile, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKeyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %T cannot sign", ErrBadKeyFile, key)
	}
	return signer, nil
}

// ErrBadCertFile is returned for a certificate file that does not parse.
var ErrBadCertFile = errors.New("ca: not a usable certificate")

// ParseCertsPEM reads every CERTIFICATE block of data, in order.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCertFile, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE block", ErrBadCertFile)
	}
	return certs, nil
}

// EncodeCertsPEM encodes certificates as concatenated PEM blocks.
func EncodeCertsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func keysMatch(pub crypto.PublicKey, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := key.Public().(equaler)
	return ok && e.Equal(pub)
}
