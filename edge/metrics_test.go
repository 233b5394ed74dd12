package edge

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestCollectorExportsStatus(t *testing.T) {
	notAfter := time.Unix(1_900_000_000, 0)
	rl := fmt.Errorf("%w: %w", ErrRateLimited, &acme.ProblemDetails{Type: "urn:ietf:params:acme:error:rateLimited"})
	status := []CertStatus{
		{Name: "shop", Issuer: "le", NotAfter: notAfter, NextRenewal: notAfter.Add(-30 * 24 * time.Hour), Orders: 2},
		{Name: "blog", Issuer: "le", Failures: 3, Orders: 3, LastError: rl, RetryAt: time.Unix(1_800_000_000, 0)},
	}
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(NewCollector(func() []CertStatus { return status })))
	want := `
# HELP certmesh_edge_certificate_expiry_timestamp_seconds NotAfter of the edge certificate being served, as a Unix timestamp.
# TYPE certmesh_edge_certificate_expiry_timestamp_seconds gauge
certmesh_edge_certificate_expiry_timestamp_seconds{issuer="le",name="shop"} 1.9e+09
# HELP certmesh_edge_certificate_consecutive_failures Failed orders since the last success, per edge certificate.
# TYPE certmesh_edge_certificate_consecutive_failures gauge
certmesh_edge_certificate_consecutive_failures{name="blog"} 3
certmesh_edge_certificate_consecutive_failures{name="shop"} 0
# HELP certmesh_edge_certificate_last_error 1 while the certificate's last order failed, labelled with the ACME problem type (rateLimited, unauthorized, …) or a local cause.
# TYPE certmesh_edge_certificate_last_error gauge
certmesh_edge_certificate_last_error{name="blog",type="rateLimited"} 1
# HELP certmesh_edge_orders_total ACME orders placed by this process, per edge certificate (issuances plus failed attempts).
# TYPE certmesh_edge_orders_total counter
certmesh_edge_orders_total{name="blog"} 3
certmesh_edge_orders_total{name="shop"} 2
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		"certmesh_edge_certificate_expiry_timestamp_seconds", "certmesh_edge_certificate_consecutive_failures",
		"certmesh_edge_certificate_last_error", "certmesh_edge_orders_total"))
}

func TestErrorType(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"acme problem", &acme.ProblemDetails{Type: "urn:ietf:params:acme:error:unauthorized"}, "unauthorized"},
		{"wrapped problem", fmt.Errorf("%w: %w", ErrChallengeFailed, &acme.ProblemDetails{Type: "urn:ietf:params:acme:error:dns"}), "dns"},
		{"odd problem type", &acme.ProblemDetails{Type: "https://example.com/weird"}, "other"},
		{"sentinel only", fmt.Errorf("x: %w", ErrOrderInProgress), "orderInProgress"},
		{"config", ErrInvalidConfig, "invalidConfig"},
		{"plain", errors.New("dial tcp: refused"), "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { require.Equal(t, tt.want, ErrorType(tt.err)) })
	}
}
