// Command svid is what a workload holds: it fetches its X.509-SVID from the
// SPIFFE Workload API with go-spiffe's client (one attempt) and prints the
// certificate chain and the private key in PEM, so that the hostile suite,
// running it as a workload's uid, holds exactly what an attacker who broke
// into that workload would.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	socket := flag.String("socket", "", "Workload API socket (unix://...)")
	flag.Parse()
	if err := run(*socket); err != nil {
		fmt.Fprintln(os.Stderr, "svid:", err)
		os.Exit(1)
	}
}

func run(socket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(socket))
	if err != nil {
		return err
	}
	certs, key, err := svid.Marshal()
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s%s", certs, key)
	return err
}
