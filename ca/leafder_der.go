package ca

import (
	"crypto/x509"
	"math/big"
	"time"
)

// DER tags the leaf encoder writes.
const (
	tagBoolean         = 0x01
	tagInteger         = 0x02
	tagBitString       = 0x03
	tagOctetString     = 0x04
	tagOID             = 0x06
	tagUTCTime         = 0x17
	tagGeneralizedTime = 0x18
	tagSequence        = 0x30
	tagContext0        = 0x80 // [0] IMPLICIT, primitive (keyIdentifier)
	tagExtensions      = 0xa3 // [3] EXPLICIT, constructed
	// GeneralName choices (RFC 5280 4.2.1.6), [n] IMPLICIT, primitive.
	tagNameDNS = 0x82
	tagNameURI = 0x86
	tagNameIP  = 0x87
)

// maxDERLength bounds one value's length to what four length octets hold;
// no leaf comes near it, but a caller could pass absurd names.
const maxDERLength = 1<<32 - 1

// derBuf appends DER. A constructed value is opened with a one-byte length
// placeholder and closed once its contents are written: close fills in the
// length, moving the contents along when the long form needs more octets.
// This is what cryptobyte.Builder does, without a child builder and a
// closure per value. failed is set if a length does not fit.
type derBuf struct {
	b      []byte
	failed bool
}

// open starts a constructed value and returns where its contents begin.
func (d *derBuf) open(tag byte) int {
	d.b = append(d.b, tag, 0)
	return len(d.b)
}

// close writes the length of the value whose contents began at start.
func (d *derBuf) close(start int) {
	n := len(d.b) - start
	if n < 0x80 {
		d.b[start-1] = byte(n)
		return
	}
	if n > maxDERLength {
		d.failed = true
		return
	}
	k := 1
	for v := n >> 8; v > 0; v >>= 8 {
		k++
	}
	d.b = append(d.b, make([]byte, k)...)
	copy(d.b[start+k:], d.b[start:start+n])
	d.b[start-1] = 0x80 | byte(k)
	for i := k - 1; i >= 0; i-- {
		d.b[start+i] = byte(n)
		n >>= 8
	}
}

// header appends a tag and the definite length n.
func (d *derBuf) header(tag byte, n int) {
	switch {
	case n < 0x80:
		d.b = append(d.b, tag, byte(n))
	case n <= 0xff:
		d.b = append(d.b, tag, 0x81, byte(n))
	case n <= 0xffff:
		d.b = append(d.b, tag, 0x82, byte(n>>8), byte(n))
	case n <= 0xffffff:
		d.b = append(d.b, tag, 0x83, byte(n>>16), byte(n>>8), byte(n))
	case n <= maxDERLength:
		d.b = append(d.b, tag, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		d.failed = true
	}
}

// add appends a primitive value.
func (d *derBuf) add(tag byte, content []byte) {
	d.header(tag, len(content))
	d.b = append(d.b, content...)
}

func (d *derBuf) addString(tag byte, s string) {
	d.header(tag, len(s))
	d.b = append(d.b, s...)
}

// addBitString appends a BIT STRING of whole octets (no unused bits).
func (d *derBuf) addBitString(bits []byte) {
	d.header(tagBitString, len(bits)+1)
	d.b = append(d.b, 0)
	d.b = append(d.b, bits...)
}

// addSerial appends a non-negative INTEGER as encoding/asn1 and cryptobyte
// write a *big.Int: minimal big-endian octets, a leading zero when the top
// bit is set, and a single zero octet for zero.
func (d *derBuf) addSerial(n *big.Int) {
	size := (n.BitLen() + 7) / 8
	pad := 0
	if size == 0 || n.Bit(size*8-1) == 1 {
		pad = 1
	}
	d.header(tagInteger, pad+size)
	if pad == 1 {
		d.b = append(d.b, 0)
	}
	d.b = append(d.b, make([]byte, size)...)
	n.FillBytes(d.b[len(d.b)-size:])
}

// openExtension starts Extension ::= SEQUENCE { extnID, critical BOOLEAN
// DEFAULT FALSE, extnValue OCTET STRING } up to the OCTET STRING's contents;
// closeExtension ends it.
func (d *derBuf) openExtension(oid []byte, critical bool) [2]int {
	ext := d.open(tagSequence)
	d.add(tagOID, oid)
	if critical {
		d.b = append(d.b, tagBoolean, 1, 0xff)
	}
	return [2]int{ext, d.open(tagOctetString)}
}

func (d *derBuf) closeExtension(ext [2]int) {
	d.close(ext[1])
	d.close(ext[0])
}

// addKeyUsage appends the BIT STRING Go's marshalKeyUsage writes: bit i of
// ku is bit i of the string (the first octet's high bit is bit 0), one
// octet, or two when a bit above 7 is set, and trailing zero bits declared
// unused.
func (d *derBuf) addKeyUsage(ku x509.KeyUsage) {
	a := [2]byte{reverseBits(byte(ku)), reverseBits(byte(ku >> 8))}
	n := 1
	if a[1] != 0 {
		n = 2
	}
	bitLen := 0
	for i := n*8 - 1; i >= 0; i-- {
		if a[i/8]&(0x80>>(i%8)) != 0 {
			bitLen = i + 1
			break
		}
	}
	d.b = append(d.b, tagBitString, byte(1+n), byte((8-bitLen%8)%8))
	d.b = append(d.b, a[:n]...)
}

func reverseBits(in byte) byte {
	var out byte
	for i := range 8 {
		out = out<<1 | (in>>i)&1
	}
	return out
}

// addTime appends t as encoding/asn1 writes a time.Time field after
// CreateCertificate's .UTC(): UTCTime (YYMMDDhhmmssZ) for 1950–2049,
// GeneralizedTime (YYYYMMDDhhmmssZ) otherwise, fractions dropped. False for
// a year GeneralizedTime cannot hold, which Go refuses too.
func (d *derBuf) addTime(t time.Time) bool {
	t = t.UTC()
	year := t.Year()
	var digits [15]byte
	n := 0
	two := func(v int) {
		digits[n], digits[n+1] = byte('0'+v/10), byte('0'+v%10)
		n += 2
	}
	tag := byte(tagUTCTime)
	switch {
	case 1950 <= year && year < 2050:
		two(year % 100)
	case 0 <= year && year <= 9999:
		tag = tagGeneralizedTime
		two(year / 100)
		two(year % 100)
	default:
		return false
	}
	_, month, day := t.Date()
	hour, minute, sec := t.Clock()
	two(int(month))
	two(day)
	two(hour)
	two(minute)
	two(sec)
	digits[n] = 'Z'
	d.add(tag, digits[:n+1])
	return true
}
