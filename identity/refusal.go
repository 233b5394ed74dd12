package identity

import (
	"errors"

	"google.golang.org/grpc/codes"
)

// Refusal is an attestation failure that says how a gRPC boundary shows it:
// the status code and a stable reason for logs and metric labels. The
// sentinel errors of identity and its attestors are Refusals, so every API
// that attests callers (the CA's, the agent's Envoy SDS and Workload API)
// reads code and reason from the error instead of keeping its own table.
// Compare a Refusal with errors.Is against its sentinel.
type Refusal struct {
	code   codes.Code
	reason string
	msg    string
}

// NewRefusal makes a sentinel: msg is its Error text, code and reason how
// a gRPC boundary reports it.
func NewRefusal(code codes.Code, reason, msg string) error {
	return &Refusal{code: code, reason: reason, msg: msg}
}

// Error implements error.
func (r *Refusal) Error() string { return r.msg }

// Code is the gRPC status code the caller receives.
func (r *Refusal) Code() codes.Code { return r.code }

// Reason is the stable label for logs and metrics.
func (r *Refusal) Reason() string { return r.reason }

// RefusalOf finds the first Refusal in err's tree (errors.As order: an
// outer wrap before what it wraps).
func RefusalOf(err error) (*Refusal, bool) {
	var r *Refusal
	if errors.As(err, &r) {
		return r, true
	}
	return nil, false
}
