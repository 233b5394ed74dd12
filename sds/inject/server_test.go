package inject

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// countingReader is an endless body that counts what was read from it.
type countingReader struct{ n int64 }

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	c.n += int64(len(p))
	return len(p), nil
}

func TestHandlerRefusesLargeBodies(t *testing.T) {
	h, err := NewHandler(testCfg, func(context.Context, string) (map[string]string, error) { return nil, nil }, nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		name          string
		contentLength int64
		maxRead       int64
	}{
		// Chunked (no length): MaxBytesReader stops one byte past the cap.
		{name: "unknown length", contentLength: -1, maxRead: MaxReviewBytes + 1},
		// A declared length over the cap is refused before reading anything.
		{name: "declared length", contentLength: 100 << 20, maxRead: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := &countingReader{}
			req := httptest.NewRequest(http.MethodPost, Path, body)
			req.ContentLength = tc.contentLength
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
			require.Contains(t, rec.Body.String(), "over 3145728 bytes")
			require.LessOrEqual(t, body.n, tc.maxRead, "the body was not read to its end")
		})
	}
	// At the cap it is read and judged on its content.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(bytes.Repeat([]byte(" "), MaxReviewBytes))))
	require.Equal(t, http.StatusBadRequest, rec.Code)
}

// blocked is a handler that reports each entry and waits for release.
type blocked struct {
	entered chan struct{}
	release chan struct{}
}

func newBlocked() *blocked {
	return &blocked{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (b *blocked) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	b.entered <- struct{}{}
	<-b.release
	w.WriteHeader(http.StatusOK)
}

func TestLimitInFlight(t *testing.T) {
	b := newBlocked()
	h := LimitInFlight(b, 2)
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for range 2 {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, nil))
			codes <- rec.Code
		})
	}
	<-b.entered
	<-b.entered

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, nil))
	require.Equal(t, http.StatusTooManyRequests, rec.Code, "a third review is refused at once")
	require.Equal(t, "1", rec.Header().Get("Retry-After"))

	close(b.release)
	wg.Wait()
	require.Equal(t, http.StatusOK, <-codes)
	require.Equal(t, http.StatusOK, <-codes)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, nil))
	require.Equal(t, http.StatusOK, rec.Code, "slots are given back")
}

// TestServerBoundsInFlight: the served webhook applies the bound on its
// review path, and /healthz stays answerable while the reviews are stuck.
func TestServerBoundsInFlight(t *testing.T) {
	cert := selfSigned(t)
	b := newBlocked()
	srv, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", Handler: b, MaxInFlight: 1,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }})
	require.NoError(t, err)
	addr, err := srv.Listen()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test server
	defer client.CloseIdleConnections()
	url := "https://" + addr.String()
	first := make(chan int, 1)
	go func() {
		resp, err := client.Post(url+Path, "application/json", nil)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-b.entered

	resp, err := client.Post(url+Path, "application/json", nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	resp, err = client.Get(url + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	close(b.release)
	require.Equal(t, http.StatusOK, <-first)
}

func selfSigned(t *testing.T) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "webhook"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
