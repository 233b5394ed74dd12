package agent_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/test/harness"
)

var bulkProfiles = flag.String("bulk.profiles", "", "BenchmarkBulkIssuance: directory to write each process's CPU profile (pprof) to")

// BenchmarkBulkIssuance starts with N registration entries (one uid each,
// every node) and times a real agent from its start to holding all N
// SVIDs: `certmesh dev` (CA and agent in one process) until its ready line,
// and `certmesh agent` against a running `certmesh server` until its
// SPIFFE_ENDPOINT_SOCKET line. Each process's CPU time (utime+stime from
// /proc) is divided by N. The floors, timed in the same run as CPU time of
// one thread: the CA's share (bare x509.CreateCertificate plus parsing and
// checking a CSR) and the agent's (a P-256 key and a CSR).
func BenchmarkBulkIssuance(b *testing.B) {
	for _, mode := range []string{"dev", "server+agent"} {
		for _, n := range []int{1000, 5000} {
			b.Run(fmt.Sprintf("%s/entries=%d", mode, n), func(b *testing.B) {
				regs := bulkRegistrations(b, n)
				caFloor, agentFloor := bulkFloors(b, 300)
				load := loadAvg(b)
				var r bulkRun
				for b.Loop() {
					if mode == "dev" {
						r = bulkDev(b, regs, n)
					} else {
						r = bulkServerAgent(b, regs, n)
					}
				}
				perSVID := func(sec float64) float64 { return sec / float64(n) * 1e6 }
				b.ReportMetric(float64(r.wall.Milliseconds()), "wall-ms")
				b.ReportMetric(float64(n)/r.wall.Seconds(), "svid/s")
				b.ReportMetric(perSVID(r.caCPU+r.agentCPU), "cpu-us/svid")
				if mode != "dev" {
					b.ReportMetric(perSVID(r.caCPU), "server-cpu-us/svid")
					b.ReportMetric(perSVID(r.agentCPU), "agent-cpu-us/svid")
				}
				b.ReportMetric(caFloor, "floor-ca-us/svid")
				b.ReportMetric(agentFloor, "floor-agent-us/svid")
				b.ReportMetric(perSVID(r.caCPU+r.agentCPU)/(caFloor+agentFloor), "cpu-vs-floor")
				b.ReportMetric(load, "loadavg-1m") // what else ran: wall time is only comparable at like load
			})
		}
	}
}

// bulkRun is one start: wall time to all SVIDs held, and CPU seconds spent
// by the CA and by the agent (dev: both in caCPU's process, agentCPU 0).
type bulkRun struct {
	wall            time.Duration
	caCPU, agentCPU float64
}

func bulkRegistrations(b *testing.B, n int) string {
	ws := make([]harness.Workload, n)
	for i := range ws {
		ws[i] = harness.Workload{ID: fmt.Sprintf("spiffe://example.org/bulk/w%d", i), UID: 100000 + i, Nodes: []string{"*"}}
	}
	return harness.Registrations(b, "example.org", ws...)
}

// profileEnv asks the process for a CPU profile when -bulk.profiles is set.
func profileEnv(b *testing.B, name string, n int) []string {
	if *bulkProfiles == "" {
		return nil
	}
	if err := os.MkdirAll(*bulkProfiles, 0o755); err != nil {
		b.Fatal(err)
	}
	abs, err := filepath.Abs(filepath.Join(*bulkProfiles, fmt.Sprintf("%s-%d.pprof", name, n)))
	if err != nil {
		b.Fatal(err)
	}
	return []string{"CERTMESH_CPUPROFILE=" + abs}
}

func bulkDev(b *testing.B, regs string, n int) bulkRun {
	dir := harness.StateDir(b)
	start := time.Now()
	p := harness.Start(b, harness.Spec{Name: "certmesh dev", Path: certmesh(b), StopGrace: 15 * time.Second, Env: profileEnv(b, "dev", n),
		Args: []string{"dev", "--dir", dir, "--trust-domain", "example.org", "--registrations", regs, "--listen", "127.0.0.1:0"}})
	line := p.WaitLine(b, "certmesh dev: CA on ", 120*time.Second)
	wall := time.Since(start)
	cpu := cpuSeconds(b, p.Pid())
	if want := fmt.Sprintf(", %d workload identities ready", n); !strings.HasSuffix(line, want) {
		b.Fatalf("dev ready with %q, want %q", line, want)
	}
	if err := p.Stop(); err != nil {
		b.Fatalf("certmesh dev: %v\n%s", err, p)
	}
	return bulkRun{wall: wall, caCPU: cpu}
}

func bulkServerAgent(b *testing.B, regs string, n int) bulkRun {
	dir := harness.StateDir(b)
	addr := "127.0.0.1:" + freePort(b)
	srv := harness.Start(b, harness.Spec{Name: "certmesh server", Path: certmesh(b), Env: profileEnv(b, "server", n),
		Args: []string{"server", "--dir", dir, "--trust-domain", "example.org", "--registrations", regs, "--listen", addr}})
	srv.WaitLine(b, "certmesh CA for example.org", 30*time.Second)
	bundle := filepath.Join(b.TempDir(), "bundle.pem")
	out, err := exec.Command(certmesh(b), "ca", "bundle", "--dir", dir).Output()
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(bundle, out, 0o644); err != nil {
		b.Fatal(err)
	}
	token, err := exec.Command(certmesh(b), "token", "create", "--dir", dir, "--id", "spiffe://example.org/certmesh/node/bulk", "--ttl", "1m").Output()
	if err != nil {
		b.Fatal(err)
	}
	srvCPU := cpuSeconds(b, srv.Pid())
	start := time.Now()
	agent := harness.Start(b, harness.Spec{Name: "certmesh agent", Path: certmesh(b), Env: profileEnv(b, "agent", n),
		Args: []string{"agent", "--server", addr, "--socket", harness.SocketPath(b, "bulk.sock"), "--join-token", strings.TrimSpace(string(token)),
			"--trust-domain", "example.org", "--trust-bundle", bundle, "--registrations", regs}})
	agent.WaitLine(b, "SPIFFE_ENDPOINT_SOCKET=", 120*time.Second)
	r := bulkRun{wall: time.Since(start), caCPU: cpuSeconds(b, srv.Pid()) - srvCPU, agentCPU: cpuSeconds(b, agent.Pid())}
	for _, p := range []*harness.Proc{agent, srv} {
		if err := p.Stop(); err != nil {
			b.Fatalf("%v\n%s", err, p)
		}
	}
	return r
}

// bulkFloors times, in CPU time of one locked thread (other load on the
// machine does not count), the least work each side must do per SVID:
// the CA signs a leaf and parses and checks a CSR; the agent makes a P-256
// key and a CSR. Microseconds each.
func bulkFloors(b *testing.B, n int) (caUS, agentUS float64) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := catest.NewFloor()
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})
	t0 := threadCPU(b)
	for range n {
		if err := f.Sign(); err != nil {
			b.Fatal(err)
		}
		if _, err := ca.ParseCSR(csrPEM); err != nil {
			b.Fatal(err)
		}
	}
	t1 := threadCPU(b)
	for range n {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k); err != nil {
			b.Fatal(err)
		}
	}
	t2 := threadCPU(b)
	return (t1 - t0).Seconds() * 1e6 / float64(n), (t2 - t1).Seconds() * 1e6 / float64(n)
}

// threadCPU is the calling thread's user+system CPU time.
func threadCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg is the machine's one-minute load average (/proc/loadavg).
func loadAvg(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		b.Fatal(err)
	}
	v, err := strconv.ParseFloat(strings.Fields(string(data))[0], 64)
	if err != nil {
		b.Fatal(err)
	}
	return v
}
