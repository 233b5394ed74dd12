package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/certmesh/certmesh/ca/admin"
	"github.com/certmesh/certmesh/ca/server"
)

// errProblemsFound makes `certmesh diagnose` exit non-zero when a check fails,
// so scripts can tell a healthy certificate from a broken one.
var errProblemsFound = errors.New("diagnose: problems found")

// finding is the outcome of one diagnostic step.
type finding struct {
	Step   string `json:"step"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Fix says what to do when the step failed.
	Fix string `json:"fix,omitempty"`
}

// diagnoser holds what the checks need; tests replace the network parts.
type diagnoser struct {
	name       string
	dir        string // the state directory
	now        time.Time
	status     func(ctx context.Context) (server.Status, error)
	lookup     func(ctx context.Context, host string) ([]string, error)
	http       *http.Client
	http01Port string
}

// runDiagnose implements `certmesh diagnose edge NAME`.
func runDiagnose(ctx context.Context, args []string, out io.Writer) error {
	if len(args) < 2 || args[0] != "edge" {
		return errors.New("usage: certmesh diagnose edge NAME [--dir DIR] [--resolver HOST:PORT] [--http01-port 80] [-o text|json]")
	}
	name := args[1]
	fs := flag.NewFlagSet("diagnose edge", flag.ContinueOnError)
	dir := fs.String("dir", stateDirDefault(), "state directory of the server that owns the certificate")
	resolver := fs.String("resolver", "", "DNS server to ask, HOST:PORT (default: this machine's resolver)")
	port := fs.String("http01-port", "80", "port the ACME CA connects to for HTTP-01 (80 in production)")
	timeout := fs.Duration("timeout", 5*time.Second, "time allowed for each network check")
	format := fs.String("o", "text", "output: text or json")
	if err := parse(fs, args[2:]); err != nil {
		return err
	}
	d := newDiagnoser(name, *dir, *resolver, *port, *timeout)
	findings := d.run(ctx)
	if err := printFindings(out, name, findings, *format); err != nil {
		return err
	}
	for _, f := range findings {
		if !f.OK {
			return errProblemsFound
		}
	}
	return nil
}

func newDiagnoser(name, dir, resolver, port string, timeout time.Duration) *diagnoser {
	r := net.DefaultResolver
	if resolver != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, network, resolver)
		}}
	}
	client := admin.NewClient(filepath.Join(dir, admin.SocketName))
	return &diagnoser{
		name: name, dir: dir, now: time.Now(), http01Port: port,
		status: func(ctx context.Context) (server.Status, error) {
			var st server.Status
			err := client.Status(ctx, &st)
			return st, err
		},
		lookup: func(ctx context.Context, host string) ([]string, error) {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return r.LookupHost(ctx, host)
		},
		http: &http.Client{Timeout: timeout, Transport: &http.Transport{
			DialContext: (&net.Dialer{Timeout: timeout, Resolver: r}).DialContext,
		}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// run performs every step in the order an expert would, carrying on after a
// failure so that one run shows every problem.
func (d *diagnoser) run(ctx context.Context) []finding {
	st, known, server := d.serverStep(ctx)
	out := []finding{server}
	if server.OK {
		out = append(out, d.issuerStep(st, known))
	}
	names := []string{d.name}
	if known && len(st.DNSNames) > 0 {
		names = st.DNSNames
	}
	out = append(out, d.dnsStep(ctx, names))
	out = append(out, d.http01Step(ctx, names))
	if server.OK && known {
		out = append(out, d.acmeErrorStep(st))
	}
	files, leaf := d.filesStep(names)
	out = append(out, files)
	if leaf != nil {
		out = append(out, d.expiryStep(leaf))
	}
	return out
}

func printFindings(out io.Writer, name string, findings []finding, format string) error {
	if format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"name": name, "findings": findings})
	}
	if format != "text" {
		return fmt.Errorf("-o %q: want text or json", format)
	}
	fmt.Fprintf(out, "diagnosing edge certificate %s\n", name)
	var first *finding
	for i, f := range findings {
		mark := "ok  "
		if !f.OK {
			mark = "FAIL"
			if first == nil {
				first = &findings[i]
			}
		}
		fmt.Fprintf(out, "%d. [%s] %s: %s\n", i+1, mark, f.Step, f.Detail)
		if !f.OK && f.Fix != "" {
			fmt.Fprintf(out, "          fix: %s\n", f.Fix)
		}
	}
	if first == nil {
		fmt.Fprintln(out, "diagnosis: nothing wrong found; the certificate should be served")
		return nil
	}
	fmt.Fprintf(out, "diagnosis: %s\n", first.Detail)
	return nil
}

// fileMode reports a file's permission bits, or an error.
func fileMode(path string) (os.FileMode, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Mode().Perm(), nil
}
