package edge

import (
	"crypto/tls"
	"net/http"
	"strings"
	"sync"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/http01"
	"github.com/go-acme/lego/v4/challenge/tlsalpn01"
)

// httpResponder answers HTTP-01 challenges for every certificate from one shared token
// table, so many orders can run at once behind one listener (lego's own server binds a
// port per order and would collide).
type httpResponder struct {
	mu     sync.RWMutex
	tokens map[string]string // token → key authorization
}

var (
	_ challenge.Provider = (*httpResponder)(nil)
	_ http.Handler       = (*httpResponder)(nil)
)

func newHTTPResponder() *httpResponder { return &httpResponder{tokens: map[string]string{}} }

// Present implements challenge.Provider.
func (r *httpResponder) Present(_, token, keyAuth string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens[token] = keyAuth
	return nil
}

// CleanUp implements challenge.Provider.
func (r *httpResponder) CleanUp(_, token, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.tokens, token)
	return nil
}

// ServeHTTP answers GET /.well-known/acme-challenge/<token>.
func (r *httpResponder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	token, ok := strings.CutPrefix(req.URL.Path, http01.ChallengePath(""))
	if !ok || req.Method != http.MethodGet {
		http.NotFound(w, req)
		return
	}
	r.mu.RLock()
	keyAuth, ok := r.tokens[token]
	r.mu.RUnlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(keyAuth))
}

// alpnResponder answers TLS-ALPN-01 (RFC 8737) handshakes from a table of challenge
// certificates keyed by server name.
type alpnResponder struct {
	mu    sync.RWMutex
	certs map[string]*tls.Certificate
}

var _ challenge.Provider = (*alpnResponder)(nil)

func newALPNResponder() *alpnResponder { return &alpnResponder{certs: map[string]*tls.Certificate{}} }

// Present implements challenge.Provider.
func (r *alpnResponder) Present(domain, _, keyAuth string) error {
	cert, err := tlsalpn01.ChallengeCert(domain, keyAuth)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.certs[strings.ToLower(domain)] = cert
	return nil
}

// CleanUp implements challenge.Provider.
func (r *alpnResponder) CleanUp(domain, _, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.certs, strings.ToLower(domain))
	return nil
}

// tlsConfig only completes acme-tls/1 handshakes for names with a pending challenge.
func (r *alpnResponder) tlsConfig() *tls.Config {
	return &tls.Config{
		NextProtos: []string{tlsalpn01.ACMETLS1Protocol},
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			r.mu.RLock()
			defer r.mu.RUnlock()
			if cert, ok := r.certs[strings.ToLower(hello.ServerName)]; ok {
				return cert, nil
			}
			return nil, errNoALPNChallenge
		},
	}
}
