// Command certmesh is one binary for the whole control plane: the CA server,
// the agent, the embedded dev mode, and the operator's CLI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name  string
	short string
	run   func(ctx context.Context, args []string, out io.Writer) error
}

func commands() []command {
	return []command{
		{"dev", "run the CA and the agent in one process (no Kubernetes)", runDev},
		{"server", "run the CA server", runServer},
		{"agent", "run the agent beside a remote CA server", runAgent},
		{"ca", "init | inspect | rotate | bundle: manage the CA of a state directory", runCA},
		{"token", "create: make a one-time join token on a running server", runToken},
		{"node", "list | evict ID | ban ID: the node agents a running server knows", runNode},
		{"status", "show what a running server knows (certificates, CA, rotation)", runStatus},
		{"diagnose", "explain why an edge certificate is not served: diagnose edge NAME", runDiagnose},
		{"version", "print the version", func(_ context.Context, _ []string, out io.Writer) error {
			_, err := fmt.Fprintln(out, "certmesh", version)
			return err
		}},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopProfile := startCPUProfile(os.Getenv(cpuProfileEnv))
	err := dispatch(ctx, os.Args[1:], os.Stdout)
	stopProfile()
	if errors.Is(err, flag.ErrHelp) {
		return // --help asked for: the usage is printed, and that is success
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "certmesh:", err)
		os.Exit(2)
	}
}

// cpuProfileEnv names a file to write a CPU profile (pprof) of the whole run
// to, written when the command returns (Ctrl-C included). The bulk-issuance
// benchmark (test/agent) uses it on real processes; it is a diagnostic, off
// unless set.
const cpuProfileEnv = "CERTMESH_CPUPROFILE"

func startCPUProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "certmesh: "+cpuProfileEnv+":", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

func dispatch(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(out)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], out)
		}
	}
	usage(out)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(out io.Writer) {
	fmt.Fprintln(out, "usage: certmesh <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(out, "  %-8s %s\n", c.name, c.short)
	}
}
