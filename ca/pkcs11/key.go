//go:build cgo

package pkcs11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/certmesh/certmesh/ca"
)

// curves maps the CA key types a token can make to their named curve.
var curves = map[ca.KeyType]elliptic.Curve{ca.KeyECP256: elliptic.P256(), ca.KeyECP384: elliptic.P384()}

var curveOIDs = map[elliptic.Curve]asn1.ObjectIdentifier{
	elliptic.P256(): {1, 2, 840, 10045, 3, 1, 7},
	elliptic.P384(): {1, 3, 132, 0, 34},
}

// Key is an ECDSA private key on a token: a crypto.Signer whose Sign runs
// C_Sign. It keeps one session (signing is serialized per key) and opens a
// new one, logging in again, after any failure: a token that went away and
// came back is used again without a restart.
type Key struct {
	m   *module
	uri URI // names this key: token, object and id
	pub *ecdsa.PublicKey

	mu   sync.Mutex
	sess *session
}

type session struct {
	h   pkcs11.SessionHandle
	obj pkcs11.ObjectHandle
	gen int
}

var _ ca.ExternalKey = (*Key)(nil)

// Public is the key's public half, read from the token when the key was opened.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// KeyURI names the key, without any PIN: what the CA records on disk.
func (k *Key) KeyURI() string { return k.uri.String() }

// Sign signs digest (already hashed, as crypto.Signer has it) with
// CKM_ECDSA and returns the ASN.1 signature x509 expects. Any failure
// wraps ErrUnavailable and drops the session.
func (k *Key) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var raw []byte
	err := k.m.use(func(ctx *pkcs11.Ctx, gen int) error {
		s, err := k.session(ctx, gen, pkcs11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		if err = ctx.SignInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, s.obj); err == nil {
			raw, err = ctx.Sign(s.h, digest)
		}
		if err != nil {
			k.drop(ctx)
			return fmt.Errorf("%w: sign with %s: %v", ErrUnavailable, k.uri, err)
		}
		return nil
	})
	if err != nil {
		k.resetIfGone(err)
		return nil, err
	}
	return ecdsaASN1(raw)
}

// resetIfGone makes the module start afresh after a failure: PKCS#11
// libraries commonly see tokens only at C_Initialize.
func (k *Key) resetIfGone(err error) {
	if errors.Is(err, ErrUnavailable) {
		k.m.reset(k.currentGen())
	}
}

func (k *Key) currentGen() int {
	k.m.rw.RLock()
	defer k.m.rw.RUnlock()
	return k.m.gen
}

// session returns the key's open session of this generation, opening one
// (and finding the object of class class) if needed. Called with k.mu held.
func (k *Key) session(ctx *pkcs11.Ctx, gen int, class uint) (*session, error) {
	if k.sess != nil && k.sess.gen == gen {
		return k.sess, nil
	}
	k.sess = nil
	h, err := k.open(ctx)
	if err != nil {
		return nil, err
	}
	obj, err := k.find(ctx, h, class)
	if err != nil {
		_ = ctx.CloseSession(h)
		return nil, err
	}
	k.sess = &session{h: h, obj: obj, gen: gen}
	return k.sess, nil
}

func (k *Key) drop(ctx *pkcs11.Ctx) {
	if k.sess != nil {
		_ = ctx.CloseSession(k.sess.h)
		k.sess = nil
	}
}

// open finds the token, opens a read-write session and logs in.
func (k *Key) open(ctx *pkcs11.Ctx) (pkcs11.SessionHandle, error) {
	slot, err := k.slot(ctx)
	if err != nil {
		return 0, err
	}
	h, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("%w: open session on %s: %v", ErrUnavailable, k.uri, err)
	}
	pin, err := k.uri.PIN()
	if err != nil {
		_ = ctx.CloseSession(h)
		return 0, err
	}
	if pin != "" {
		err = ctx.Login(h, pkcs11.CKU_USER, pin)
		var perr pkcs11.Error
		if err != nil && !(errors.As(err, &perr) && perr == pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
			_ = ctx.CloseSession(h)
			if errors.As(err, &perr) && (perr == pkcs11.CKR_PIN_INCORRECT || perr == pkcs11.CKR_PIN_LOCKED) {
				return 0, fmt.Errorf("pkcs11: log in to %s: %v", k.uri, err)
			}
			return 0, fmt.Errorf("%w: log in to %s: %v", ErrUnavailable, k.uri, err)
		}
	}
	return h, nil
}

// ErrNoToken is returned when no slot holds the token a URI names.
var ErrNoToken = fmt.Errorf("%w: no such token", ErrUnavailable)

func (k *Key) slot(ctx *pkcs11.Ctx) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("%w: list slots of %s: %v", ErrUnavailable, k.m.path, err)
	}
	for _, s := range slots {
		info, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if (k.uri.Token == "" || strings.TrimRight(info.Label, " \x00") == k.uri.Token) &&
			(k.uri.Serial == "" || strings.TrimRight(info.SerialNumber, " \x00") == k.uri.Serial) {
			return s, nil
		}
	}
	return 0, fmt.Errorf("%w: token=%q serial=%q in %s", ErrNoToken, k.uri.Token, k.uri.Serial, k.m.path)
}

// ErrNoKey is returned when the token holds no (or more than one) key the URI names.
var ErrNoKey = errors.New("pkcs11: no single key matches")

func (k *Key) find(ctx *pkcs11.Ctx, h pkcs11.SessionHandle, class uint) (pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
	if k.uri.Object != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, k.uri.Object))
	}
	if len(k.uri.ID) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, k.uri.ID))
	}
	if err := ctx.FindObjectsInit(h, tmpl); err != nil {
		return 0, fmt.Errorf("%w: find %s: %v", ErrUnavailable, k.uri, err)
	}
	objs, _, err := ctx.FindObjects(h, 2)
	_ = ctx.FindObjectsFinal(h)
	if err != nil {
		return 0, fmt.Errorf("%w: find %s: %v", ErrUnavailable, k.uri, err)
	}
	if len(objs) != 1 {
		return 0, fmt.Errorf("%w: %d objects of class %d match %s", ErrNoKey, len(objs), class, k.uri)
	}
	return objs[0], nil
}

// checkToken reaches the token and logs in, and nothing else.
func (k *Key) checkToken() error {
	return k.m.use(func(ctx *pkcs11.Ctx, _ int) error {
		h, err := k.open(ctx)
		if err != nil {
			return err
		}
		return ctx.CloseSession(h)
	})
}

// loadPublic reads the public key object that goes with the private key.
func (k *Key) loadPublic() error {
	return k.m.use(func(ctx *pkcs11.Ctx, _ int) error {
		h, err := k.open(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = ctx.CloseSession(h) }()
		if _, err := k.find(ctx, h, pkcs11.CKO_PRIVATE_KEY); err != nil {
			return err
		}
		pubObj, err := k.find(ctx, h, pkcs11.CKO_PUBLIC_KEY)
		if err != nil {
			return err
		}
		k.pub, err = readECPublic(ctx, h, pubObj)
		return err
	})
}

// generate makes the key pair on the token.
func (k *Key) generate(curve elliptic.Curve) error {
	params, err := asn1.Marshal(curveOIDs[curve])
	if err != nil {
		return err
	}
	return k.m.use(func(ctx *pkcs11.Ctx, _ int) error {
		h, err := k.open(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = ctx.CloseSession(h) }()
		common := func(class uint) []*pkcs11.Attribute {
			return []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, k.uri.Object),
				pkcs11.NewAttribute(pkcs11.CKA_ID, k.uri.ID),
			}
		}
		pub := append(common(pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params))
		priv := append(common(pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false))
		pubObj, _, err := ctx.GenerateKeyPair(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}, pub, priv)
		if err != nil {
			return fmt.Errorf("%w: generate key %s: %v", ErrUnavailable, k.uri, err)
		}
		k.pub, err = readECPublic(ctx, h, pubObj)
		return err
	})
}

func readECPublic(ctx *pkcs11.Ctx, h pkcs11.SessionHandle, obj pkcs11.ObjectHandle) (*ecdsa.PublicKey, error) {
	attrs, err := ctx.GetAttributeValue(h, obj, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil), pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: read public key: %v", ErrUnavailable, err)
	}
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(attrs[0].Value, &oid); err != nil {
		return nil, fmt.Errorf("pkcs11: public key curve: %w", err)
	}
	var curve elliptic.Curve
	for c, o := range curveOIDs {
		if o.Equal(oid) {
			curve = c
		}
	}
	if curve == nil {
		return nil, fmt.Errorf("pkcs11: public key on curve %v: %w", oid, ca.ErrUnknownKeyType)
	}
	// CKA_EC_POINT is the uncompressed point in a DER OCTET STRING.
	var point []byte
	s := cryptobyte.String(attrs[1].Value)
	if !s.ReadASN1Bytes(&point, cbasn1.OCTET_STRING) {
		point = attrs[1].Value // some modules give the bare point
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: public key: %w", err)
	}
	return pub, nil
}

// ecdsaASN1 turns PKCS#11's r||s into the DER SEQUENCE x509 expects.
func ecdsaASN1(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, fmt.Errorf("%w: ECDSA signature of %d bytes", ErrUnavailable, len(raw))
	}
	r := new(big.Int).SetBytes(raw[:len(raw)/2])
	s := new(big.Int).SetBytes(raw[len(raw)/2:])
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(r)
		b.AddASN1BigInt(s)
	})
	return b.Bytes()
}

// Destroy removes the key pair from the token: the CA calls it when the
// intermediate it signed for is retired.
func (k *Key) Destroy() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m.use(func(ctx *pkcs11.Ctx, _ int) error {
		k.drop(ctx)
		h, err := k.open(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = ctx.CloseSession(h) }()
		for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
			obj, err := k.find(ctx, h, class)
			if errors.Is(err, ErrNoKey) {
				continue
			}
			if err != nil {
				return err
			}
			if err := ctx.DestroyObject(h, obj); err != nil {
				return fmt.Errorf("%w: destroy %s: %v", ErrUnavailable, k.uri, err)
			}
		}
		return nil
	})
}
