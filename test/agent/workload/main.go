// Command workload is a test workload: it gets its identity from the SPIFFE
// Workload API (go-spiffe's own client) and either serves or dials mTLS,
// authorizing the peer by SPIFFE ID. It is run as different uids by the
// agent integration test so that identities come from attestation.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	mode := flag.String("mode", "", "serve or dial")
	addr := flag.String("addr", "127.0.0.1:0", "address")
	peer := flag.String("peer", "", "SPIFFE ID the peer must have")
	socket := flag.String("socket", "", "Workload API socket (unix://...)")
	flag.Parse()
	if err := run(*mode, *addr, *peer, *socket); err != nil {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(1)
	}
}

func run(mode, addr, peer, socket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if mode == "fetch" {
		// One attempt, no retries: shows what the agent answers this uid.
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(socket))
		if err != nil {
			return err
		}
		fmt.Println("identity", svid.ID)
		return nil
	}
	peerID, err := spiffeid.FromString(peer)
	if err != nil {
		return err
	}
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(socket)))
	if err != nil {
		return fmt.Errorf("X509 source: %w", err)
	}
	defer source.Close()
	svid, err := source.GetX509SVID()
	if err != nil {
		return err
	}
	fmt.Println("identity", svid.ID)
	switch mode {
	case "serve":
		lis, err := spiffetls.ListenWithMode(ctx, "tcp", addr, spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(peerID), source))
		if err != nil {
			return err
		}
		defer lis.Close()
		fmt.Println("listening", lis.Addr())
		conn, err := lis.Accept()
		if err != nil {
			return err
		}
		defer conn.Close()
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		_, err = fmt.Fprintf(conn, "hello %s, got %s", peerID, line)
		return err
	case "dial":
		conn, err := spiffetls.DialWithMode(ctx, "tcp", addr, spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(peerID), source))
		if err != nil {
			return fmt.Errorf("dial: %w", err)
		}
		defer conn.Close()
		if _, err := fmt.Fprintln(conn, "ping"); err != nil {
			return err
		}
		reply, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil && reply == "" {
			return fmt.Errorf("read: %w", err)
		}
		fmt.Println("reply", reply)
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}
