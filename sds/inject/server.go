package inject

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Path is where the apiserver posts pod AdmissionReviews.
const Path = "/inject"

// ServerConfig configures the webhook's HTTPS listener.
type ServerConfig struct {
	// Addr to listen on (":9443" in a pod, "127.0.0.1:0" in tests).
	Addr    string
	Handler http.Handler
	// GetCertificate yields the serving certificate, issued by certmesh's CA
	// (service.ServingCert.GetCertificate with the webhook Service's DNS names).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// MaxInFlight bounds the AdmissionReviews served at once (default
	// DefaultMaxInFlight); more are answered 429 at once, which the apiserver
	// treats as a webhook failure (the pod's controller retries).
	MaxInFlight int
}

// DefaultMaxInFlight is ServerConfig.MaxInFlight's default: a review takes
// milliseconds, so more than this at once is a flood, not load.
const DefaultMaxInFlight = 16

// Timeouts of the webhook's HTTP server: the apiserver gives a webhook at most
// 30 s (ours: 5 s), so a slower client is not the apiserver.
const (
	readTimeout  = 10 * time.Second
	writeTimeout = 10 * time.Second
	idleTimeout  = 90 * time.Second
)

// Server serves Handler over TLS.
type Server struct {
	cfg ServerConfig
	ln  net.Listener
}

// NewServer validates cfg; Listen then Run (or Run alone) serve it.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Addr == "" || cfg.Handler == nil || cfg.GetCertificate == nil {
		return nil, errors.New("inject: Addr, Handler and GetCertificate are required")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	return &Server{cfg: cfg}, nil
}

// Listen binds the address, so that callers learn the port before Run.
func (s *Server) Listen() (net.Addr, error) {
	if s.ln != nil {
		return s.ln.Addr(), nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("inject: listen: %w", err)
	}
	s.ln = ln
	return ln.Addr(), nil
}

// Run serves until ctx ends. The apiserver speaks HTTP/1.1 or h2 over TLS ≥ 1.2 and
// presents no client certificate unless configured to.
func (s *Server) Run(ctx context.Context) error {
	if _, err := s.Listen(); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(Path, LimitInFlight(s.cfg.Handler, s.cfg.MaxInFlight))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.cfg.GetCertificate,
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	err := srv.ServeTLS(s.ln, "", "")
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("inject: serve: %w", err)
}

// LimitInFlight lets at most n requests into h at once and answers the rest
// 429 Too Many Requests without waiting.
func LimitInFlight(h http.Handler, n int) http.Handler {
	sem := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
			h.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many AdmissionReviews in flight", http.StatusTooManyRequests)
		}
	})
}
