package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/certmesh/certmesh/ca/server"
)

// Step names, shown to the operator and used by tests.
const (
	stepServer  = "server"
	stepIssuer  = "issuer"
	stepDNS     = "dns"
	stepHTTP01  = "http-01"
	stepACME    = "last ACME error"
	stepFiles   = "files"
	stepExpired = "validity"
)

// rateLimitedType is the ACME problem type of a rate-limit refusal (RFC 8555 §6.7).
const rateLimitedType = "rateLimited"

// soonExpiry is when a valid certificate still earns a warning in the detail.
const soonExpiry = 14 * 24 * time.Hour

func (d *diagnoser) serverStep(ctx context.Context) (server.EdgeCertificate, bool, finding) {
	st, err := d.status(ctx)
	if err != nil {
		return server.EdgeCertificate{}, false, finding{Step: stepServer, Detail: fmt.Sprintf("no certmesh server answers on %s: nobody obtains or renews edge certificates (%v)", d.dir, err),
			Fix: "start `certmesh server` (or `certmesh dev`) with --dir " + d.dir}
	}
	for _, c := range st.Edge {
		if c.Name == d.name {
			return c, true, finding{Step: stepServer, OK: true, Detail: "a certmesh server is running and knows " + d.name}
		}
	}
	return server.EdgeCertificate{}, false, finding{Step: stepServer, OK: true, Detail: "a certmesh server is running"}
}

func (d *diagnoser) issuerStep(st server.EdgeCertificate, known bool) finding {
	f := finding{Step: stepIssuer}
	switch {
	case !known:
		f.Detail = fmt.Sprintf("the server has no edge certificate named %s, so it never orders one", d.name)
		f.Fix = "add --edge-domain " + d.name + " (or a certificates entry in --edge-config) and restart the server"
	case st.Issuer == "":
		f.Detail = fmt.Sprintf("certificate %s names no ACME issuer", d.name)
		f.Fix = "give it an issuer (--acme-directory, or issuer: in --edge-config)"
	default:
		f.OK, f.Detail = true, fmt.Sprintf("issuer %q for %s", st.Issuer, strings.Join(st.DNSNames, ", "))
	}
	return f
}

func (d *diagnoser) dnsStep(ctx context.Context, names []string) finding {
	var resolved []string
	for _, n := range names {
		if strings.HasPrefix(n, "*.") {
			continue // a wildcard is proven by DNS-01, not by resolving it
		}
		addrs, err := d.lookup(ctx, n)
		if err != nil || len(addrs) == 0 {
			return finding{Step: stepDNS, Detail: fmt.Sprintf("%s does not resolve (%v): neither the ACME CA's HTTP-01 check nor browsers can reach it", n, err),
				Fix: "create an A/AAAA record for " + n + " pointing at the ingress"}
		}
		resolved = append(resolved, n+" → "+strings.Join(addrs, ","))
	}
	return finding{Step: stepDNS, OK: true, Detail: "resolves: " + strings.Join(resolved, "; ")}
}

// http01Step fetches a made-up challenge token: certmesh's responder answers
// 404 for it, which proves the path reaches an HTTP server; no answer means
// the CA cannot validate HTTP-01 either.
func (d *diagnoser) http01Step(ctx context.Context, names []string) finding {
	host := names[0]
	for _, n := range names {
		if !strings.HasPrefix(n, "*.") {
			host = n
			break
		}
	}
	if strings.HasPrefix(host, "*.") {
		return finding{Step: stepHTTP01, OK: true, Detail: "wildcard names are validated with DNS-01; HTTP-01 not used"}
	}
	url := "http://" + net.JoinHostPort(host, d.http01Port) + "/.well-known/acme-challenge/certmesh-diagnose-probe"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return finding{Step: stepHTTP01, Detail: err.Error()}
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return finding{Step: stepHTTP01, Detail: fmt.Sprintf("nothing answers %s from here (%v): the CA's HTTP-01 validation fails the same way", url, err),
			Fix: "route /.well-known/acme-challenge/ on port " + d.http01Port + " to certmesh's --http01-addr (or use DNS-01)"}
	}
	_ = resp.Body.Close()
	if resp.StatusCode >= 500 {
		return finding{Step: stepHTTP01, Detail: fmt.Sprintf("%s answers %s: the challenge path is broken", url, resp.Status),
			Fix: "route /.well-known/acme-challenge/ to certmesh's --http01-addr"}
	}
	return finding{Step: stepHTTP01, OK: true, Detail: fmt.Sprintf("%s answers (%s)", url, resp.Status)}
}

func (d *diagnoser) acmeErrorStep(st server.EdgeCertificate) finding {
	if st.Error == "" {
		return finding{Step: stepACME, OK: true, Detail: fmt.Sprintf("none (%d orders so far)", st.Orders)}
	}
	retry := ""
	if !st.RetryAt.IsZero() {
		retry = fmt.Sprintf("; next attempt at %s (in %s)", st.RetryAt.Format(time.RFC3339), st.RetryAt.Sub(d.now).Round(time.Second))
	}
	if st.ErrorType == rateLimitedType || (st.ErrorType == "" && strings.Contains(st.Error, "urn:ietf:params:acme:error:"+rateLimitedType)) {
		return finding{Step: stepACME, Detail: fmt.Sprintf("the ACME CA rate-limits orders for %s%s: %s", d.name, retry, st.Error),
			Fix: "wait for the retry time; do not delete state or restart in a loop (each new order counts against the limit)"}
	}
	return finding{Step: stepACME, Detail: fmt.Sprintf("the last order failed (%d in a row)%s: %s", st.Failures, retry, st.Error),
		Fix: "fix the cause named in the error; certmesh retries by itself with backoff"}
}

// filesStep checks the stored tls.crt / tls.key: present, parsable, key
// private, key matching, and names covered. It returns the leaf when readable.
func (d *diagnoser) filesStep(names []string) (finding, *x509.Certificate) {
	dir := filepath.Join(d.dir, "edge", d.name)
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	fail := func(detail, fix string) (finding, *x509.Certificate) {
		return finding{Step: stepFiles, Detail: detail, Fix: fix}, nil
	}
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return fail(certPath+" does not exist: no certificate has been obtained yet", "see the steps above for why ordering fails")
	}
	if err != nil {
		return fail(err.Error(), "")
	}
	keyPEM, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return fail(keyPath+" does not exist: the certificate cannot be served without its key", "delete "+dir+" so certmesh orders a fresh pair")
	}
	if err != nil {
		return fail(err.Error(), "")
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return fail(certPath+" holds no PEM certificate", "delete "+dir+" so certmesh orders a fresh pair")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return fail(fmt.Sprintf("%s: %v", certPath, err), "delete "+dir+" so certmesh orders a fresh pair")
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return finding{Step: stepFiles, Detail: fmt.Sprintf("%s does not match the key in %s: %v", certPath, keyPath, err),
			Fix: "delete " + dir + " so certmesh orders a fresh pair"}, leaf
	}
	for _, n := range names {
		if err := leaf.VerifyHostname(strings.Replace(n, "*", "x", 1)); err != nil {
			return finding{Step: stepFiles, Detail: fmt.Sprintf("the stored certificate does not cover %s (it names %s)", n, strings.Join(leaf.DNSNames, ", ")),
				Fix: "certmesh re-orders when names change; check the server's last error"}, leaf
		}
	}
	if mode, err := fileMode(keyPath); err == nil && mode&0o077 != 0 {
		return finding{Step: stepFiles, Detail: fmt.Sprintf("%s is readable by others (mode %#o)", keyPath, mode), Fix: "chmod 600 " + keyPath}, leaf
	}
	return finding{Step: stepFiles, OK: true, Detail: fmt.Sprintf("%s and tls.key match and cover %s", certPath, strings.Join(names, ", "))}, leaf
}

func (d *diagnoser) expiryStep(leaf *x509.Certificate) finding {
	switch {
	case d.now.After(leaf.NotAfter):
		return finding{Step: stepExpired, Detail: fmt.Sprintf("the stored certificate expired at %s", leaf.NotAfter.Format(time.RFC3339)),
			Fix: "renewal has been failing: see the last ACME error above"}
	case d.now.Before(leaf.NotBefore):
		return finding{Step: stepExpired, Detail: fmt.Sprintf("the stored certificate is not valid before %s (clock skew?)", leaf.NotBefore.Format(time.RFC3339)),
			Fix: "check this machine's clock"}
	}
	left := leaf.NotAfter.Sub(d.now).Round(time.Minute)
	detail := fmt.Sprintf("valid until %s (%s left)", leaf.NotAfter.Format(time.RFC3339), left)
	if left < soonExpiry {
		detail += "; renewal is overdue"
	}
	return finding{Step: stepExpired, OK: true, Detail: detail}
}
