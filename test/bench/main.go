// Command bench runs certmesh's benchmarks and the end-to-end latency
// measurement, and writes BENCHMARKS.md: every figure with its method and the
// baseline measured in the same run. `make bench` runs it from the repository
// root:
//
//	go run ./test/bench -o BENCHMARKS.md
//
// Pebble, ghostunnel and spiffe-helper must be installed (test/tools/install.sh)
// and the e2e part needs root, as the e2e tests do.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// job is one section of the report.
type job struct {
	title  string
	method string
	pkg    string
	bench  string // -bench regexp
	// benchtime overrides the default -benchtime (e.g. "20x" for medians of 20).
	benchtime string
	// compare lists the baseline ratios to compute from the results.
	compare []compare
	// args are passed to the test binary after the package.
	args []string
	// profiles: the job writes CPU profiles (*.pprof) into profileDir, and
	// the report shows the top functions of those named in summarize.
	profiles []string
}

// profileDir keeps the bulk-issuance CPU profiles beside the report; it is
// ignored by git (binary, ~15-45 KB each, changing with every run): the
// report carries a `go tool pprof -top` summary of each instead, and the
// files are there to open with `go tool pprof -http` after a run.
const profileDir = "test/bench/profiles"

// compare is "a is x times b" for one unit, both from the same run.
type compare struct {
	label, a, b, unit string
}

func jobs() []job {
	return []job{
		{title: "Signing rate", pkg: "./ca/", bench: "^BenchmarkSign(Floor|Direct)$",
			method:  "`ca.Sign` (TTL policy, serial, template, chain assembly) against bare `x509.CreateCertificate` with the same key type, one goroutine.",
			compare: []compare{{"ca.Sign vs bare x509.CreateCertificate (ns/op)", "BenchmarkSignDirect", "BenchmarkSignFloor", "ns/op"}}},
		{title: "Signing with the intermediate on an HSM (SoftHSM2)", pkg: "./ca/pkcs11/", bench: "^BenchmarkSignToken$",
			method:  "`ca.Sign` with a P-256 intermediate key in memory (the ECDSA fast path) and on a SoftHSM2 token (PKCS#11 `C_Sign` through `crypto.Signer`, then `x509.CreateCertificate`), one goroutine, same run.",
			compare: []compare{{"intermediate on SoftHSM2 vs in memory (ns/op)", "BenchmarkSignToken/softhsm", "BenchmarkSignToken/memory", "ns/op"}}},
		{title: "Signing over gRPC (mTLS renewal)", pkg: "./ca/service/", bench: "^Benchmark(SignFloor|CreateCertificateMTLS)$",
			method:  "`CreateCertificate` over a real TLS gRPC connection on loopback, caller authenticated by its SVID, against the bare signing floor.",
			compare: []compare{{"CreateCertificate over mTLS vs bare signing (ns/op)", "BenchmarkCreateCertificateMTLS", "BenchmarkSignFloor", "ns/op"}}},
		{title: "First SVID latency", pkg: "./sds/", bench: "^BenchmarkFirstSVID(Floor)?$",
			method:  "Agent start to holding its node SVID and one workload SVID, against a real CA on loopback; the floor is one TLS dial plus one CreateCertificate with a join token.",
			compare: []compare{{"agent first SVID vs one bare request (ns/op)", "BenchmarkFirstSVID", "BenchmarkFirstSVIDFloor", "ns/op"}}},
		{title: "SDS rotation fan-out and memory per stream", pkg: "./sds/envoy/", bench: "^Benchmark(RotationFanout|IdleStreamMemory)$", benchtime: "3x",
			method:  "N Envoy-like SDS streams on the agent's handler; time from a rotation to the new secret arriving on each stream (p50/p99/slowest), and heap+stack per idle stream.",
			compare: []compare{{"p99 at 10,000 vs 1,000 streams (p99-ms)", "BenchmarkRotationFanout/streams=10000", "BenchmarkRotationFanout/streams=1000", "p99-ms"}}},
		{title: "Agent process RSS per stream", pkg: "./test/agent/", bench: "^BenchmarkAgentStreams$", benchtime: "1x",
			method:  "A real `certmesh dev` process; RSS before and after opening N SDS streams (default + ROOTCA), then `certmesh ca rotate` until every stream has the new bundle.",
			compare: []compare{{"push p99 at 10,000 vs 1,000 streams", "BenchmarkAgentStreams/10000", "BenchmarkAgentStreams/1000", "push-p99-ms"}}},
		{title: "CA server signing per core", pkg: "./test/agent/", bench: "^BenchmarkCAServerPerCore$", benchtime: "3000x",
			method: "A `certmesh server` process signs renewals (mTLS with the caller's SVID, a CSR each time) from 4 parallel clients; the server's own CPU time (from /proc) per leaf against bare `x509.CreateCertificate` timed in the same run (`ratio-to-floor`: 1.0 would mean the service costs nothing beyond the signature)."},
		{title: "Kubernetes: SVIDs through TokenReview", pkg: "./test/kube/", bench: "^BenchmarkSVIDsTokenReview",
			method: "A real kube-apiserver + etcd: SVIDs per second for ServiceAccount-token callers (20 pods' tokens, reused) with the 10 s review cache and without (cache of 1): uncached with neither watch cache (a TokenReview, a pod GET and a Services LIST per SVID), with the Service watch cache, and with the Service and Pod watch caches (the TokenReview alone); apiserver requests per SVID counted on the attestor's client.",
			compare: []compare{
				{"cached vs uncached (svid/s)", "BenchmarkSVIDsTokenReview/cached", "BenchmarkSVIDsTokenReview/uncached", "svid/s"},
				{"uncached: Service watch cache vs a LIST per review (svid/s)", "BenchmarkSVIDsTokenReview/uncached-watched-services", "BenchmarkSVIDsTokenReview/uncached", "svid/s"},
				{"uncached: Service and Pod watch caches vs Service cache only (svid/s)", "BenchmarkSVIDsTokenReview/uncached-watched-services-and-pods", "BenchmarkSVIDsTokenReview/uncached-watched-services", "svid/s"},
			}},
		{title: "Kubernetes: Ingress or Gateway to Secret", pkg: "./test/kube/", bench: "^Benchmark(Ingress|Gateway)ToSecret$", benchtime: "20x",
			method:  "A real kube-apiserver + etcd and Pebble: time from creating an annotated Ingress, or a Gateway with one HTTPS listener (Gateway API CRDs installed), to its TLS Secret holding a certificate (median of 20), HTTP-01 routed by a temporary Ingress or HTTPRoute.",
			compare: []compare{{"Gateway vs Ingress median", "BenchmarkGatewayToSecret", "BenchmarkIngressToSecret", "ms/to-secret-median"}}},
		{title: "ACME issuance against Pebble", pkg: "./edge/", bench: "^Benchmark(Issuance|HundredAtOnce)$", benchtime: "20x",
			method:  "A real Pebble and challtestsrv on loopback: one order end to end per iteration (median of 20) for HTTP-01 and DNS-01; then 100 certificates requested at once (wall time, orders placed: must be 100).",
			compare: []compare{{"DNS-01 vs HTTP-01 median", "BenchmarkIssuance/dns-01", "BenchmarkIssuance/http-01", "ms/issue-median"}}},
		bulkJob(),
	}
}

// bulkJob is issue 17's measure: N registration entries present at start,
// to every SVID held by the agent.
func bulkJob() job {
	return job{title: "Bulk issuance at start", pkg: "./test/agent/", bench: "^BenchmarkBulkIssuance$", benchtime: "1x",
		method:   "N registration entries (one uid each, `nodes: [\"*\"]`) present before start; wall time from starting the agent to its ready line with all N SVIDs held — `certmesh dev` (CA and agent in one process), and `certmesh agent` against an already running `certmesh server` — and each process's CPU (utime+stime from /proc) per SVID. Floors timed in the same run as CPU time of one thread: `floor-ca` = bare `x509.CreateCertificate` + parsing and checking a CSR, `floor-agent` = a P-256 key + a CSR; `cpu-vs-floor` = all processes' CPU per SVID over the sum of both floors. Wall time and SVIDs/s depend on what else the machine runs (`loadavg-1m`, read before each start; on 2 cores, anything above 2 means certmesh waited for a core); CPU per SVID much less. `go run ./test/bench -only bulk -splice` (`make bench-bulk`) reruns this section alone, in place.",
		args:     []string{"-bulk.profiles"},
		profiles: []string{"dev-5000", "server-5000", "agent-5000"},
		compare: []compare{
			{"dev: CPU per SVID at 5,000 vs 1,000 entries (cpu-us/svid)", "BenchmarkBulkIssuance/dev/entries=5000", "BenchmarkBulkIssuance/dev/entries=1000", "cpu-us/svid"},
			{"5,000 entries: server+agent vs dev (cpu-us/svid)", "BenchmarkBulkIssuance/server+agent/entries=5000", "BenchmarkBulkIssuance/dev/entries=5000", "cpu-us/svid"},
			{"5,000 entries: server+agent vs dev (svid/s)", "BenchmarkBulkIssuance/server+agent/entries=5000", "BenchmarkBulkIssuance/dev/entries=5000", "svid/s"},
		}}
}

func main() {
	out := flag.String("o", "BENCHMARKS.md", "report to write")
	benchtime := flag.String("benchtime", "2s", "default -benchtime for jobs that do not set their own")
	only := flag.String("only", "", "run only the jobs whose title contains this (for a quick look)")
	skipE2E := flag.Bool("skip-e2e", false, "leave out the end-to-end latency (needs root and the proxies)")
	splice := flag.Bool("splice", false, "with -only: replace just the sections that ran in the existing report (each marked with its own date and commit) instead of writing a report of them alone")
	flag.Parse()
	if err := run(*out, *benchtime, *only, *skipE2E, *splice); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(out, benchtime, only string, skipE2E, splice bool) error {
	var sections []section
	for _, j := range jobs() {
		if only != "" && !strings.Contains(strings.ToLower(j.title), strings.ToLower(only)) {
			continue
		}
		bt := j.benchtime
		if bt == "" {
			bt = benchtime
		}
		fmt.Fprintf(os.Stderr, "bench: %s (%s, -benchtime %s)\n", j.title, j.pkg, bt)
		args := []string{"test", "-run", "^$", "-bench", j.bench, "-benchmem", "-benchtime", bt, "-timeout", "60m", j.pkg}
		if len(j.profiles) > 0 {
			dir, err := filepath.Abs(profileDir)
			if err != nil {
				return err
			}
			args = append(args, append(j.args, dir)...)
		}
		raw, err := goTest(90*time.Minute, args...)
		s := section{job: j, results: parseBench(bytes.NewReader(raw)), err: err, benchtime: bt}
		for _, name := range j.profiles {
			s.profiles = append(s.profiles, summarizeProfile(filepath.Join(profileDir, name+".pprof")))
		}
		sections = append(sections, s)
	}
	if !skipE2E && (only == "" || strings.Contains(e2eTitle, only)) {
		sections = append(sections, e2eSection())
	}
	var buf bytes.Buffer
	if err := writeReport(&buf, sections); err != nil {
		return err
	}
	report := buf.Bytes()
	if splice {
		old, err := os.ReadFile(out)
		if err != nil {
			return err
		}
		report = spliceSections(old, buf.Bytes())
	}
	if err := os.WriteFile(out, report, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", out)
	for _, s := range sections {
		if s.err != nil {
			return fmt.Errorf("%s: %w (the report shows what ran)", s.job.title, s.err)
		}
	}
	return nil
}

// goTest runs the go tool, echoing its output to stderr, and returns stdout.
func goTest(timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	var stdout bytes.Buffer
	cmd.Stdout = io.MultiWriter(&stdout, os.Stderr)
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	return stdout.Bytes(), err
}

// summarizeProfile is the top of a CPU profile by cumulative time, without
// the goroutine wrappers and the crypto internals (their callers show).
func summarizeProfile(path string) profile {
	p := profile{name: filepath.Base(path)}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount", "25",
		"-hide", `^(sync|golang\.org/x/sync/errgroup|runtime)\.|^crypto/internal/|^p256`, path).Output()
	if err != nil {
		p.err = err
		return p
	}
	p.top = append(p.top, trimProfileHeader(string(out)))
	return p
}

// trimProfileHeader drops the lines that change with every build (file,
// build ID, time) and keeps the duration, totals and table.
func trimProfileHeader(s string) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

const e2eTitle = "End-to-end request latency"

// e2eSection runs the e2e test in its latency mode and reads its JSON.
func e2eSection() section {
	j := job{title: e2eTitle, pkg: "./test/e2e/",
		method: "`TestEncryptedChain` (test/e2e): Go HTTP client → edge TLS terminator (ghostunnel, Pebble-issued certificate) → gateway ghostunnel (mTLS, SVID from the Workload API) → wire tap → backend sidecar ghostunnel → app, all on loopback, each proxy its own process and uid. Baseline: the same four hops as plain TCP forwarders in front of the same app, same run. Each series is 500 sequential requests, with a new connection per request (every hop handshakes) and with keep-alive."}
	fmt.Fprintf(os.Stderr, "bench: %s\n", j.title)
	dir, err := os.MkdirTemp("", "certmesh-bench-")
	if err != nil {
		return section{job: j, err: err}
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "latency.json")
	_, err = goTest(10*time.Minute, "test", "-count=1", "-run", "^TestEncryptedChain$", "-timeout", "8m", j.pkg, "-e2e.latency-out", file, "-e2e.latency-n", "500")
	s := section{job: j, err: err}
	if err == nil {
		s.latency, s.err = readLatency(file)
	}
	return s
}
