package main

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReportShowsMethodBaselineAndFailures(t *testing.T) {
	sign := jobs()[0]
	sections := []section{
		{job: sign, benchtime: "2s", results: []result{
			{Name: "BenchmarkSignFloor", N: 10, Metrics: map[string]float64{"ns/op": 50000}},
			{Name: "BenchmarkSignDirect", N: 10, Metrics: map[string]float64{"ns/op": 60000}},
		}},
		{job: job{title: e2eTitle, method: "m"}, latency: []latency{
			{Chain: "mtls", N: 5, P50ms: 6},
			{Chain: "plain", N: 5, P50ms: 1},
		}},
		{job: job{title: "Broken", method: "m"}, err: errors.New("exit status 1")},
	}
	var buf bytes.Buffer
	require.NoError(t, writeReport(&buf, sections))
	out := buf.String()
	require.Contains(t, out, "## Signing rate")
	require.Contains(t, out, "**Method.** `ca.Sign`")
	require.Contains(t, out, "**1.20×** (60000 vs 50000)")
	require.Contains(t, out, "| SignDirect | 10 | 60000 |")
	require.Contains(t, out, "encrypted p50 is 5.000 ms above plain TCP (6.0×)")
	require.Contains(t, out, "**This run failed:** exit status 1")
}
