// Package admin is the server's local control socket (<dir>/admin.sock):
// join tokens, CA rotation and status for the certmesh CLI. It is HTTP with
// JSON over a unix socket that only the server's own user (or root) may use —
// the file is 0600 and the peer's uid is checked on every connection.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sys/unix"

	"github.com/certmesh/certmesh/ca/store"
)

// SocketName is the admin socket's file name inside a state directory.
const SocketName = "admin.sock"

// Backend is what the admin API controls.
type Backend interface {
	CreateJoinToken(id spiffeid.ID, ttl time.Duration) (string, time.Time, error)
	Rotate() (any, error)
	// ForceRotate activates a prepared root the rotation gate holds.
	ForceRotate() (any, error)
	Status() any
	// Nodes lists node agents (and identities that joined with a token);
	// SetNode evicts or bans one (action "evict" or "ban").
	Nodes() any
	SetNode(id spiffeid.ID, action string) (any, error)
}

// NodeRequest evicts or bans a node agent.
type NodeRequest struct {
	ID string `json:"id"`
}

// TokenRequest asks for a join token.
type TokenRequest struct {
	ID  string `json:"id"`
	TTL string `json:"ttl"`
}

// TokenResponse carries a new join token.
type TokenResponse struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	ExpiresAt time.Time `json:"expiresAt"`
}

type errorBody struct {
	Error string `json:"error"`
}

// Handler serves the admin API for b.
func Handler(b Backend, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/join-tokens", func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequest
		id, ok := decodeID(w, r, &req, func() string { return req.ID })
		if !ok {
			return
		}
		ttl, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{fmt.Sprintf("--ttl %q: %v", req.TTL, err)})
			return
		}
		tok, exp, err := b.CreateJoinToken(id, ttl)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
			return
		}
		log.Info("join token created", "spiffe_id", id.String(), "expires_at", exp)
		writeJSON(w, http.StatusOK, TokenResponse{Token: tok, ID: id.String(), ExpiresAt: exp})
	})
	mux.HandleFunc("POST /v1/ca/rotate", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Rotate()
		if err != nil {
			writeJSON(w, http.StatusConflict, errorBody{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /v1/ca/rotate/force", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.ForceRotate()
		if err != nil {
			writeJSON(w, http.StatusConflict, errorBody{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Status())
	})
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Nodes())
	})
	mux.HandleFunc("POST /v1/nodes/{action}", func(w http.ResponseWriter, r *http.Request) {
		action := r.PathValue("action")
		if action != "evict" && action != "ban" {
			writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("unknown node action %q (evict or ban)", action)})
			return
		}
		var req NodeRequest
		id, ok := decodeID(w, r, &req, func() string { return req.ID })
		if !ok {
			return
		}
		n, err := b.SetNode(id, action)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
			return
		}
		log.Warn("node "+action+"ed", "spiffe_id", id.String())
		writeJSON(w, http.StatusOK, n)
	})
	return mux
}

// decodeID reads a small JSON request into req and parses the SPIFFE ID
// that id returns from it; on failure it has answered 400 and ok is false.
func decodeID(w http.ResponseWriter, r *http.Request, req any, id func() string) (spiffeid.ID, bool) {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(req); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"bad request: " + err.Error()})
		return spiffeid.ID{}, false
	}
	parsed, err := spiffeid.FromString(id())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{fmt.Sprintf("--id %q: %v", id(), err)})
		return spiffeid.ID{}, false
	}
	return parsed, true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Serve listens on socketPath and serves h until ctx ends.
func Serve(ctx context.Context, socketPath string, h http.Handler) error {
	lis, err := store.ListenUnix(socketPath, 0o600)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ownerOnly{lis}) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// ownerOnly drops connections from any uid but the server's own and root:
// file permissions already say so, this holds even if they are loosened.
type ownerOnly struct{ net.Listener }

func (l ownerOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if uc, ok := c.(*net.UnixConn); ok && peerAllowed(uc) {
			return c, nil
		}
		_ = c.Close()
	}
}

func peerAllowed(uc *net.UnixConn) bool {
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) { cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || credErr != nil {
		return false
	}
	return cred.Uid == 0 || int(cred.Uid) == os.Getuid()
}
