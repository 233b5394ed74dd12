package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// StateDir is a fresh directory for a certmesh process's state, removed
// when the test ends.
func StateDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "certmesh-state-")
	if err != nil {
		t.Fatalf("harness: state dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// Workload is one entry of a registrations file.
type Workload struct {
	ID               string // SPIFFE ID
	UID              int
	DNSNames         []string
	Nodes            []string
	EdgeCertificates []string
}

// RegistrationsYAML is the text of a registrations file.
func RegistrationsYAML(trustDomain string, ws ...Workload) string {
	var b strings.Builder
	fmt.Fprintf(&b, "trustDomain: %s\nworkloads:\n", trustDomain)
	for _, w := range ws {
		fmt.Fprintf(&b, "  - spiffeID: %s\n    uid: %d\n", w.ID, w.UID)
		list := func(key string, vs []string) {
			if len(vs) > 0 {
				quoted := make([]string, len(vs))
				for i, v := range vs {
					quoted[i] = fmt.Sprintf("%q", v) // "*" unquoted is a YAML alias
				}
				fmt.Fprintf(&b, "    %s: [%s]\n", key, strings.Join(quoted, ", "))
			}
		}
		list("dnsNames", w.DNSNames)
		list("nodes", w.Nodes)
		list("edgeCertificates", w.EdgeCertificates)
	}
	return b.String()
}

// Registrations writes a registrations file into a directory of the test
// and returns its path.
func Registrations(t testing.TB, trustDomain string, ws ...Workload) string {
	t.Helper()
	return WriteRegistrations(t, filepath.Join(t.TempDir(), "registrations.yaml"), trustDomain, ws...)
}

// WriteRegistrations writes a registrations file at path and returns path.
func WriteRegistrations(t testing.TB, path, trustDomain string, ws ...Workload) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(RegistrationsYAML(trustDomain, ws...)), 0o644); err != nil {
		t.Fatalf("harness: registrations: %v", err)
	}
	return path
}

// SocketPath is where an agent of the test may put its socket so that
// workloads of every uid reach it, as /run/certmesh/agent.sock would be: a
// file in a directory that does not exist yet under the system's temp
// directory (the agent creates it, searchable by all). It is removed when
// the test ends.
func SocketPath(t testing.TB, name string) string {
	t.Helper()
	d := filepath.Join(os.TempDir(), fmt.Sprintf("certmesh-%s-%d", filepath.Base(t.TempDir()), os.Getpid()))
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return filepath.Join(d, name)
}
