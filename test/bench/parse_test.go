package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseBench(t *testing.T) {
	out := `goos: linux
goarch: amd64
pkg: github.com/certmesh/certmesh/ca
BenchmarkSignFloor-2     	   20000	     61234 ns/op	    4321 B/op	      52 allocs/op
BenchmarkRotationFanout/streams=1000-2   	       3	 402134567 ns/op	        41.20 p50-ms	        80.10 p99-ms
BenchmarkBroken-2 x ns/op
--- FAIL: BenchmarkOther
PASS
ok  	github.com/certmesh/certmesh/ca	3.2s
`
	got := parseBench(strings.NewReader(out))
	require.Len(t, got, 2)
	require.Equal(t, result{Name: "BenchmarkSignFloor", N: 20000, Metrics: map[string]float64{"ns/op": 61234, "B/op": 4321, "allocs/op": 52}}, got[0])
	require.Equal(t, "BenchmarkRotationFanout/streams=1000", got[1].Name)
	require.InDelta(t, 80.10, got[1].Metrics["p99-ms"], 1e-9)
	_, ok := find(got, "BenchmarkMissing")
	require.False(t, ok)
}

func TestTrimProcs(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"suffix", "BenchmarkX-16", "BenchmarkX"},
		{"sub-benchmark", "BenchmarkX/n=10-2", "BenchmarkX/n=10"},
		{"no suffix", "BenchmarkX", "BenchmarkX"},
		{"dash in name", "BenchmarkX/a-b", "BenchmarkX/a-b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { require.Equal(t, tt.want, trimProcs(tt.in)) })
	}
}
