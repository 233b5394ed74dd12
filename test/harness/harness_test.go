package harness

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWaitLineFollowsTheOutput(t *testing.T) {
	t.Parallel()
	p := Start(t, Spec{Name: "sh", Path: "sh", Args: []string{"-c", "echo a; echo b one; echo oops >&2; echo b two; exec sleep 30"}})
	require.Equal(t, "one", p.WaitLine(t, "b ", 5*time.Second))
	require.Equal(t, "two", p.WaitLine(t, "b ", 5*time.Second), "after the line returned before")
	WaitFor(t, 5*time.Second, "stderr", func() bool { return p.Stderr() == "oops\n" })
	require.False(t, p.Exited())
	require.Error(t, p.Stop(), "sleep ends on SIGINT")
	require.True(t, p.Exited())
	require.Contains(t, p.String(), "oops")
}

func TestWaitLineReadsALastLineWithoutNewline(t *testing.T) {
	t.Parallel()
	p := Start(t, Spec{Path: "sh", Args: []string{"-c", "printf 'c last'"}})
	WaitFor(t, 5*time.Second, "sh to end", p.Exited)
	require.Equal(t, " last", p.WaitLine(t, "c", time.Second))
	require.NoError(t, p.Stop())
}

func TestPollBoundsTries(t *testing.T) {
	t.Parallel()
	tries := 0
	took := Poll{Tries: 3, Every: time.Millisecond}.WaitFor(t, "third try", func() bool { tries++; return tries == 3 })
	require.Equal(t, 3, tries)
	require.Less(t, took, time.Second)
}

func TestRegistrationsYAML(t *testing.T) {
	t.Parallel()
	got := RegistrationsYAML("example.org",
		Workload{ID: "spiffe://example.org/a", UID: 1, DNSNames: []string{"a.svc", "b.svc"}},
		Workload{ID: "spiffe://example.org/b", UID: 2, Nodes: []string{"spiffe://example.org/n"}, EdgeCertificates: []string{"shop.example"}},
		Workload{ID: "spiffe://example.org/c", UID: 3, Nodes: []string{"*"}})
	want := strings.Join([]string{
		"trustDomain: example.org",
		"workloads:",
		"  - spiffeID: spiffe://example.org/a",
		"    uid: 1",
		`    dnsNames: ["a.svc", "b.svc"]`,
		"  - spiffeID: spiffe://example.org/b",
		"    uid: 2",
		`    nodes: ["spiffe://example.org/n"]`,
		`    edgeCertificates: ["shop.example"]`,
		"  - spiffeID: spiffe://example.org/c",
		"    uid: 3",
		`    nodes: ["*"]`,
		"",
	}, "\n")
	require.Equal(t, want, got)
}
