package pkcs11

import (
	"fmt"

	"github.com/certmesh/certmesh/ca"
)

// ErrUnavailable is returned when the token cannot be reached or fails to
// sign: it wraps ca.ErrKeyUnavailable, so the CA's callers count it as such.
var ErrUnavailable = fmt.Errorf("pkcs11: token unavailable: %w", ca.ErrKeyUnavailable)
