// Package pkcs11 keeps certmesh's CA keys on a PKCS#11 token (an HSM, or
// SoftHSM2 in tests): keys are generated on the token, sign through it, and
// are named in the state directory by an RFC 7512 URI, never written out.
package pkcs11

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
)

// ErrBadURI is returned for a key reference that is not a usable PKCS#11 URI.
var ErrBadURI = errors.New("pkcs11: bad URI")

// URI is the subset of an RFC 7512 PKCS#11 URI certmesh uses: which token
// (by label, and optionally serial), which key on it (label and/or CKA_ID),
// which module to load and where the user PIN comes from.
type URI struct {
	Token  string // path attribute "token": the token label
	Serial string // path attribute "serial"
	Object string // path attribute "object": the key's CKA_LABEL
	ID     []byte // path attribute "id": the key's CKA_ID
	// ModulePath is the query attribute "module-path": the PKCS#11 library.
	ModulePath string
	// PinSource is "file:/path" (RFC 7512 "pin-source"); PinValue is the
	// PIN inline ("pin-value"), accepted but never written to disk.
	PinSource string
	PinValue  string
}

// ParseURI parses s. Unknown path attributes are refused (they would
// otherwise silently select nothing); unknown query attributes are ignored,
// as RFC 7512 allows.
func ParseURI(s string) (URI, error) {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return URI{}, fmt.Errorf("%w: %q is not a PKCS#11 URI (want pkcs11:token=…)", ErrBadURI, redact(s))
	}
	path, query, _ := strings.Cut(rest, "?")
	var u URI
	if err := parseAttrs(path, ";", u.setPath); err != nil {
		return URI{}, err
	}
	if err := parseAttrs(query, "&", u.setQuery); err != nil {
		return URI{}, err
	}
	if u.Token == "" && u.Serial == "" {
		return URI{}, fmt.Errorf("%w: %q names no token (want token=<label>)", ErrBadURI, redact(s))
	}
	if u.ModulePath == "" {
		return URI{}, fmt.Errorf("%w: %q names no module (want ?module-path=/path/to/module.so)", ErrBadURI, redact(s))
	}
	if u.PinSource != "" && !strings.HasPrefix(u.PinSource, "file:") {
		return URI{}, fmt.Errorf("%w: pin-source %q: only file: is supported", ErrBadURI, u.PinSource)
	}
	return u, nil
}

func parseAttrs(s, sep string, set func(k, v string) error) error {
	if s == "" {
		return nil
	}
	for _, kv := range strings.Split(s, sep) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("%w: attribute %q is not name=value", ErrBadURI, k)
		}
		val, err := url.PathUnescape(v)
		if err != nil {
			return fmt.Errorf("%w: attribute %s: %v", ErrBadURI, k, err)
		}
		if err := set(k, val); err != nil {
			return err
		}
	}
	return nil
}

func (u *URI) setPath(k, v string) error {
	switch k {
	case "token":
		u.Token = v
	case "serial":
		u.Serial = v
	case "object":
		u.Object = v
	case "id":
		u.ID = []byte(v)
	case "type":
		if v != "private" {
			return fmt.Errorf("%w: type=%s: certmesh needs the private key", ErrBadURI, v)
		}
	case "manufacturer", "model", "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer", "slot-id":
		// Accepted and not used to select: token and serial do that.
	default:
		return fmt.Errorf("%w: unknown path attribute %q", ErrBadURI, k)
	}
	return nil
}

func (u *URI) setQuery(k, v string) error {
	switch k {
	case "module-path":
		u.ModulePath = v
	case "pin-source":
		u.PinSource = v
	case "pin-value":
		u.PinValue = v
	}
	return nil
}

// String is the URI without its PIN: safe to log and to store.
func (u URI) String() string {
	var path []string
	add := func(k, v string) {
		if v != "" {
			path = append(path, k+"="+escape(v))
		}
	}
	add("token", u.Token)
	add("serial", u.Serial)
	add("object", u.Object)
	add("id", string(u.ID))
	q := []string{"module-path=" + escape(u.ModulePath)}
	if u.PinSource != "" {
		q = append(q, "pin-source="+escape(u.PinSource))
	}
	sort.Strings(q)
	return "pkcs11:" + strings.Join(path, ";") + "?" + strings.Join(q, "&")
}

// escape percent-encodes everything but RFC 7512's unreserved characters
// and the few others its attribute values may hold literally.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~:[]@!$'()*+,/", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// PIN returns the user PIN: pin-value, else the first line of the
// pin-source file, else "" (a token that needs no login).
func (u URI) PIN() (string, error) {
	if u.PinValue != "" {
		return u.PinValue, nil
	}
	if u.PinSource == "" {
		return "", nil
	}
	b, err := os.ReadFile(strings.TrimPrefix(u.PinSource, "file:"))
	if err != nil {
		return "", fmt.Errorf("pkcs11: PIN: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimRight(line, "\r"), nil
}

// redact hides a pin-value in an error message.
func redact(s string) string {
	i := strings.Index(s, "pin-value=")
	if i < 0 {
		return s
	}
	end := strings.IndexByte(s[i:], '&')
	if end < 0 {
		return s[:i] + "pin-value=REDACTED"
	}
	return s[:i] + "pin-value=REDACTED" + s[i+end:]
}
