// Command handshaker is a drill workload: it takes its identity from the
// SPIFFE Workload API (go-spiffe's X509Source, which follows rotations) and
// either serves mTLS forever or, for a while, opens a new mTLS connection
// every few milliseconds while holding one long-lived connection, counting
// every failed handshake or exchange. It prints a JSON summary at the end.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Summary is what a dial run reports.
type Summary struct {
	Ops        int    `json:"ops"`
	Failures   int    `json:"failures"`
	WorstMs    int64  `json:"worstMs"`
	FirstError string `json:"firstError,omitempty"`
	Issuers    int    `json:"issuersSeen"`
}

func main() {
	mode := flag.String("mode", "", "serve or dial")
	addr := flag.String("addr", "127.0.0.1:0", "address")
	peer := flag.String("peer", "", "SPIFFE ID the peer must have")
	socket := flag.String("socket", "", "Workload API address (unix://...)")
	duration := flag.Duration("duration", 10*time.Second, "dial: how long to run")
	every := flag.Duration("every", 5*time.Millisecond, "dial: interval between new connections")
	flag.Parse()
	if err := run(*mode, *addr, *peer, *socket, *duration, *every); err != nil {
		fmt.Fprintln(os.Stderr, "handshaker:", err)
		os.Exit(1)
	}
}

func run(mode, addr, peer, socket string, duration, every time.Duration) error {
	ctx := context.Background()
	peerID, err := spiffeid.FromString(peer)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	source, err := workloadapi.NewX509Source(sctx, workloadapi.WithClientOptions(workloadapi.WithAddr(socket)))
	if err != nil {
		return fmt.Errorf("X509 source: %w", err)
	}
	defer source.Close()
	authz := tlsconfig.AuthorizeID(peerID)
	if mode == "serve" {
		return serve(ctx, addr, source, authz)
	}
	s := dial(ctx, addr, source, authz, duration, every)
	return json.NewEncoder(os.Stdout).Encode(s)
}

func serve(ctx context.Context, addr string, source *workloadapi.X509Source, authz tlsconfig.Authorizer) error {
	lis, err := spiffetls.ListenWithMode(ctx, "tcp", addr, spiffetls.MTLSServerWithSource(authz, source))
	if err != nil {
		return err
	}
	fmt.Println("listening", lis.Addr())
	for {
		c, err := lis.Accept()
		if err != nil {
			return err
		}
		go echo(c)
	}
}

func echo(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := c.Write([]byte(line)); err != nil {
			return
		}
	}
}

// dial runs new connections and one held connection side by side.
func dial(ctx context.Context, addr string, source *workloadapi.X509Source, authz tlsconfig.Authorizer, duration, every time.Duration) Summary {
	var (
		mu      sync.Mutex
		s       Summary
		issuers = map[string]bool{}
	)
	record := func(start time.Time, err error) {
		mu.Lock()
		defer mu.Unlock()
		s.Ops++
		if d := time.Since(start).Milliseconds(); d > s.WorstMs {
			s.WorstMs = d
		}
		if err != nil {
			s.Failures++
			if s.FirstError == "" {
				s.FirstError = err.Error()
			}
		}
		if svid, err := source.GetX509SVID(); err == nil {
			issuers[svid.Certificates[0].Issuer.String()] = true
		}
	}
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); held(ctx, addr, source, authz, deadline, record) }()
	for time.Now().Before(deadline) {
		start := time.Now()
		record(start, exchange(ctx, addr, source, authz))
		time.Sleep(every)
	}
	wg.Wait()
	s.Issuers = len(issuers)
	return s
}

// held keeps one connection open, pinging every 100 ms.
func held(ctx context.Context, addr string, source *workloadapi.X509Source, authz tlsconfig.Authorizer, deadline time.Time, record func(time.Time, error)) {
	c, err := spiffetls.DialWithMode(ctx, "tcp", addr, spiffetls.MTLSClientWithSource(authz, source))
	if err != nil {
		record(time.Now(), err)
		return
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for time.Now().Before(deadline) {
		start := time.Now()
		_, err := fmt.Fprintln(c, "held")
		if err == nil {
			_, err = r.ReadString('\n')
		}
		record(start, err)
		time.Sleep(100 * time.Millisecond)
	}
}

func exchange(ctx context.Context, addr string, source *workloadapi.X509Source, authz tlsconfig.Authorizer) error {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := spiffetls.DialWithMode(dctx, "tcp", addr, spiffetls.MTLSClientWithSource(authz, source))
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := fmt.Fprintln(c, "ping"); err != nil {
		return err
	}
	_, err = bufio.NewReader(c).ReadString('\n')
	return err
}
