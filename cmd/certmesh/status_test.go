package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/edge/ingress"
)

// TestStatusShowsIngressAndGatewayCertificates round-trips what the server's admin
// socket sends (the CA section plus server --ingress's "ingressCertificates") through
// the CLI's decoding and table.
func TestStatusShowsIngressAndGatewayCertificates(t *testing.T) {
	notAfter := time.Date(2027, 2, 21, 8, 0, 0, 0, time.UTC)
	sent := map[string]any{
		"ca": map[string]any{"trustDomain": "cluster.local", "phase": "steady"},
		"ingressCertificates": []ingress.CertificateStatus{
			{CertStatus: edge.CertStatus{Name: "shop/web-tls", Issuer: "le", NotAfter: notAfter, NextRenewal: notAfter.Add(-30 * 24 * time.Hour)}, Ingress: "shop/web", Secret: "shop/web-tls"},
			{CertStatus: edge.CertStatus{Name: "shop/edge-tls", Issuer: "le", Error: "acme: rateLimited", RetryAt: notAfter}, Gateway: "shop/edge", Secret: "shop/edge-tls"},
		},
	}
	raw, err := json.Marshal(sent)
	require.NoError(t, err)
	var st server.Status
	require.NoError(t, json.Unmarshal(raw, &st))
	var out bytes.Buffer
	require.NoError(t, printStatusDoc(&out, st))
	lines := strings.Split(out.String(), "\n")
	var table []string
	for i, l := range lines {
		if strings.HasPrefix(l, "SECRET") {
			table = lines[i : i+3]
		}
	}
	require.Len(t, table, 3, out.String())
	require.Regexp(t, `^shop/web-tls\s+Ingress shop/web\s+le\s+2027-02-21T08:00:00Z\s+2027-01-22T08:00:00Z\s+-$`, table[1])
	require.Regexp(t, `^shop/edge-tls\s+Gateway shop/edge\s+le\s+-\s+-\s+acme: rateLimited \(retry at 2027-02-21T08:00:00Z\)$`, table[2])
}
