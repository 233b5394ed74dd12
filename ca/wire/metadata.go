package wire

// gRPC metadata both sides name.
const (
	// AuthorizationKey carries a bearer token ("Bearer <token>") when the
	// caller has no SVID yet.
	AuthorizationKey = "authorization"
	// ImpersonatedIdentityKey is the request metadata key a node agent uses
	// to ask for a workload's certificate, as Istio's node agents do.
	ImpersonatedIdentityKey = "ImpersonatedIdentity"
	// RetryAfterKey is the trailer that tells a shed caller when to retry,
	// in milliseconds.
	RetryAfterKey = "retry-after-ms"
)
