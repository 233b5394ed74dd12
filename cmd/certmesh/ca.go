package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/admin"
	"github.com/certmesh/certmesh/ca/store"
)

func runCA(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("ca: want a subcommand: init, inspect, rotate or bundle")
	}
	switch args[0] {
	case "init":
		return caInit(args[1:], out)
	case "inspect", "status":
		return caInspect(ctx, args[1:], out)
	case "rotate":
		return caRotate(ctx, args[1:], out)
	case "bundle":
		return caBundle(args[1:], out)
	}
	return fmt.Errorf("ca: unknown subcommand %q (want init, inspect, rotate or bundle)", args[0])
}

func caDir(dir string) string { return filepath.Join(dir, "ca") }

// caInit creates the CA of a stopped server's directory, or imports a root
// and intermediate the user brings.
func caInit(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ca init", flag.ContinueOnError)
	dir := fs.String("dir", stateDirDefault(), "state directory")
	tdName := fs.String("trust-domain", "", "SPIFFE trust domain (required)")
	keyType := fs.String("key-type", string(ca.KeyECP256), "key type of a generated root and intermediate")
	rootCert := fs.String("root-cert", "", "bring your own CA: root certificate (PEM)")
	intCert := fs.String("intermediate-cert", "", "bring your own CA: intermediate certificate (PEM)")
	intKey := fs.String("intermediate-key", "", "bring your own CA: intermediate private key (PEM)")
	var hsm hsmFlags
	hsm.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(*tdName)
	if err != nil {
		return fmt.Errorf("--trust-domain %q: %w", *tdName, err)
	}
	kt, err := ca.ParseKeyType(*keyType)
	if err != nil {
		return err
	}
	cfg := ca.Config{Dir: caDir(*dir), TrustDomain: td, KeyType: kt}
	closeKeys, err := hsm.apply(&cfg)
	if err != nil {
		return err
	}
	defer closeKeys()
	if *rootCert != "" || *intCert != "" || *intKey != "" {
		imp, err := readImport(*rootCert, *intCert, *intKey)
		if err != nil {
			return err
		}
		cfg.Import = imp
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	lock, err := store.LockDir(*dir)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	c, err := ca.New(cfg)
	if err != nil {
		return err
	}
	return printStatus(out, c.Status())
}

func readImport(root, inter, key string) (*ca.ImportParams, error) {
	if root == "" || inter == "" || key == "" {
		return nil, errors.New("bring your own CA needs --root-cert, --intermediate-cert and --intermediate-key")
	}
	var p ca.ImportParams
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{root, &p.RootPEM}, {inter, &p.IntermediatePEM}, {key, &p.IntermediateKeyPEM}} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return nil, err
		}
		*f.dst = b
	}
	return &p, nil
}

// caInspect asks a running server, or reads the directory when none runs.
func caInspect(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ca inspect", flag.ContinueOnError)
	dir := fs.String("dir", stateDirDefault(), "state directory")
	format := fs.String("o", "table", "output: table or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	var live struct {
		CA ca.Status `json:"ca"`
	}
	err := admin.NewClient(filepath.Join(*dir, admin.SocketName)).Status(ctx, &live)
	st := live.CA
	if errors.Is(err, admin.ErrNoServer) {
		snap, serr := ca.ReadSnapshot(caDir(*dir))
		if serr != nil {
			return serr
		}
		st = snap.Status(time.Now())
	} else if err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return printStatus(out, st)
}

func printStatus(out io.Writer, st ca.Status) error {
	fmt.Fprintf(out, "trust domain: %s\nrotation:     %s\n", st.TrustDomain, st.Phase)
	if !st.NextEvent.IsZero() {
		fmt.Fprintf(out, "next step:    %s\n", st.NextEvent.Format(time.RFC3339))
	}
	if st.Overdue > 0 {
		fmt.Fprintf(out, "overdue:      %s past its time\n", st.Overdue.Round(time.Second))
	}
	if st.WaitingGate || st.Lagging > 0 {
		fmt.Fprintf(out, "waiting:      %d watchers do not hold the new root yet; signing switches when none lag\n", st.Lagging)
	}
	if st.RenewalFailures > 0 {
		fmt.Fprintf(out, "failures:     %d intermediate renewals failed since start (see the log)\n", st.RenewalFailures)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AUTHORITY\tPHASE\tROOT NOT AFTER\tINTERMEDIATE NOT AFTER\tNEXT STEP\tROOT")
	for _, a := range st.Authorities {
		next := "-"
		if !a.NextStep.IsZero() {
			next = a.NextStepKind + " at " + a.NextStep.Format(time.RFC3339)
		}
		if a.NotRenewable != "" && a.Phase != ca.PhaseRetiring {
			next += " (intermediate not renewed: " + a.NotRenewable + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s (%s left)\t%s\t%s\t%s\n", a.ID, a.Phase, a.RootNotAfter.Format(time.RFC3339),
			remaining(a.RootNotAfter), a.IntermediateEnd.Format(time.RFC3339), next, a.RootSubject)
	}
	return tw.Flush()
}

// remaining is how long until t, in days once it is more than two.
func remaining(t time.Time) string {
	d := time.Until(t)
	switch {
	case d <= 0:
		return "expired"
	case d > 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	return d.Round(time.Second).String()
}

// caRotate starts a root rotation on the running server, or on the directory
// if no server runs (it then takes the lock itself); `--root` says so
// explicitly, plain `ca rotate` is its alias. With --force it instead
// activates the running server's prepared root that lagging watchers hold.
func caRotate(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ca rotate", flag.ContinueOnError)
	dir := fs.String("dir", stateDirDefault(), "state directory")
	overlap := fs.Duration("rotation-overlap", ca.DefaultOverlap, "when no server runs: how long the new root is published before it signs")
	force := fs.Bool("force", false, "activate the prepared root now although watchers lag (the server logs and counts it); starts no new rotation")
	_ = fs.Bool("root", false, "start a root rotation: a new root and intermediate, published first, signing after the overlap and the watchers' acknowledgement "+
		"(what plain `ca rotate` does; intermediates are renewed automatically, see --ca-ttl)")
	var hsm hsmFlags // when no server runs; a running server uses its own
	hsm.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	client := admin.NewClient(filepath.Join(*dir, admin.SocketName))
	if *force {
		return caForceRotate(ctx, client, *dir, out)
	}
	var prepared ca.AuthorityState
	err := client.Rotate(ctx, &prepared)
	if errors.Is(err, admin.ErrNoServer) {
		prepared, err = rotateOffline(*dir, *overlap, hsm)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "new authority %s published in the trust bundle; it signs from %s\n", prepared.ID, prepared.ActivateAt.Format(time.RFC3339))
	return nil
}

// caForceRotate asks the running server to override its rotation gate.
// Without a server there is no gate to override: a server activates a due
// root itself.
func caForceRotate(ctx context.Context, client *admin.Client, dir string, out io.Writer) error {
	var got ca.ForcedActivation
	err := client.ForceRotate(ctx, &got)
	if errors.Is(err, admin.ErrNoServer) {
		return fmt.Errorf("ca rotate --force overrides a running server's wait for lagging watchers, and none runs on %s: %w", dir, err)
	}
	if err != nil {
		return err
	}
	if got.Forced {
		fmt.Fprintf(out, "authority %s signs now; forced although %d watchers did not hold its root yet\n", got.Authority.ID, got.Lagging)
		return nil
	}
	fmt.Fprintf(out, "authority %s signs now; no watcher lagged\n", got.Authority.ID)
	return nil
}

func rotateOffline(dir string, overlap time.Duration, hsm hsmFlags) (ca.AuthorityState, error) {
	snap, err := ca.ReadSnapshot(caDir(dir))
	if err != nil {
		return ca.AuthorityState{}, err
	}
	lock, err := store.LockDir(dir)
	if err != nil {
		return ca.AuthorityState{}, err
	}
	defer lock.Unlock()
	// No KeyType: the new root keeps the current root's type.
	cfg := ca.Config{Dir: caDir(dir), TrustDomain: snap.TrustDomain, RotationOverlap: overlap}
	closeKeys, err := hsm.apply(&cfg)
	if err != nil {
		return ca.AuthorityState{}, err
	}
	defer closeKeys()
	c, err := ca.New(cfg)
	if err != nil {
		return ca.AuthorityState{}, err
	}
	return c.Rotate()
}

// caBundle prints the trust bundle; it reads files only, so it works while
// a server owns the directory.
func caBundle(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ca bundle", flag.ContinueOnError)
	dir := fs.String("dir", stateDirDefault(), "state directory")
	if err := parse(fs, args); err != nil {
		return err
	}
	snap, err := ca.ReadSnapshot(caDir(*dir))
	if err != nil {
		return err
	}
	_, err = out.Write(snap.BundlePEM())
	return err
}
