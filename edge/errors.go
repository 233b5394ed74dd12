package edge

import "errors"

// Sentinel errors callers branch on. Every error the package returns starts with "edge: "
// and wraps one of these (or lego's own error) with %w.
var (
	// ErrInvalidConfig reports a Config or config file that cannot work.
	ErrInvalidConfig = errors.New("edge: invalid config")
	// ErrUnknownDNSProvider reports a DNS-01 provider name no factory knows.
	ErrUnknownDNSProvider = errors.New("edge: unknown DNS provider")
	// ErrOrderInProgress reports that another order for the same names holds the lock,
	// in this process or in another one sharing Dir.
	ErrOrderInProgress = errors.New("edge: order for these names already in progress")
	// ErrChallengeFailed reports that the CA could not validate a challenge.
	ErrChallengeFailed = errors.New("edge: challenge failed")
	// ErrRejectedIdentifier reports that the CA refuses to issue for a name by policy.
	ErrRejectedIdentifier = errors.New("edge: identifier rejected by CA")
	// ErrRateLimited reports an ACME rateLimited error; the retry honours Retry-After.
	ErrRateLimited = errors.New("edge: rate limited by CA")
	// ErrNoCertificate reports that a stored certificate is missing or unreadable.
	ErrNoCertificate = errors.New("edge: no stored certificate")
)

// errNoALPNChallenge ends a TLS-ALPN-01 handshake for a name without a pending challenge.
var errNoALPNChallenge = errors.New("edge: no tls-alpn-01 challenge for this name")
