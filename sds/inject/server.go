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
}

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
	mux.Handle(Path, s.cfg.Handler)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
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
