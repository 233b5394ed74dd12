package service

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/certmesh/certmesh/ca"
)

// TestClassifyCAErrors: a CA that cannot sign right now answers
// Unavailable (clients retry, keep their SVIDs) under a reason of its own.
func TestClassifyCAErrors(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		code   codes.Code
		reason string
	}{
		{name: "token gone", err: fmt.Errorf("ca: sign x: pkcs11: %w", ca.ErrKeyUnavailable), code: codes.Unavailable, reason: "hsm_unavailable"},
		{name: "intermediate expired", err: fmt.Errorf("x: %w", ca.ErrAuthorityExpired), code: codes.Unavailable, reason: "authority_expired"},
		{name: "unknown", err: fmt.Errorf("boom"), code: codes.Internal, reason: "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, reason := classify(tt.err)
			require.Equal(t, tt.code, code)
			require.Equal(t, tt.reason, reason)
		})
	}
}
