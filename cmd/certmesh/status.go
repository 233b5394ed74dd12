package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/certmesh/certmesh/ca/admin"
	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/edge"
)

// printStatusDoc prints the server's status as `certmesh status` tables.
func printStatusDoc(out io.Writer, st server.Status) error {
	if err := printStatus(out, st.CA); err != nil {
		return err
	}
	if r := st.Registrations; r != nil {
		fmt.Fprintf(out, "\nregistrations: %s, %d entries in force\n", r.File, r.Entries)
		if r.Error != "" {
			fmt.Fprintf(out, "  last edit NOT in force: %s\n", r.Error)
		}
	}
	if len(st.Edge) > 0 {
		fmt.Fprintln(out)
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "EDGE CERTIFICATE\tISSUER\tNOT AFTER\tNEXT RENEWAL\tLAST ERROR")
		for _, c := range st.Edge {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Issuer, fmtTime(c.NotAfter), fmtTime(c.NextRenewal), lastError(c.CertStatus))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(st.Ingress) > 0 {
		fmt.Fprintln(out)
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SECRET\tFOR\tISSUER\tNOT AFTER\tNEXT RENEWAL\tLAST ERROR")
		for _, c := range st.Ingress {
			owner := "-"
			switch {
			case c.Ingress != "":
				owner = "Ingress " + c.Ingress
			case c.Gateway != "":
				owner = "Gateway " + c.Gateway
			case c.ListenerSet != "":
				owner = "ListenerSet " + c.ListenerSet
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Secret, owner, c.Issuer, fmtTime(c.NotAfter), fmtTime(c.NextRenewal), lastError(c.CertStatus))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(st.Nodes) > 0 {
		fmt.Fprintln(out)
		return printNodes(out, st.Nodes)
	}
	return nil
}

// lastError is the certificate's last error and when it is retried, or "-".
func lastError(c edge.CertStatus) string {
	if c.Error == "" {
		return "-"
	}
	if !c.RetryAt.IsZero() {
		return c.Error + " (retry at " + c.RetryAt.Format(time.RFC3339) + ")"
	}
	return c.Error
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func runToken(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		return errors.New("token: want `token create --id SPIFFE_ID --ttl 10m`")
	}
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	dir := fs.String("dir", stateDirDefault(), "state directory of the running server")
	id := fs.String("id", "", "SPIFFE ID the token grants (required)")
	ttl := fs.Duration("ttl", 10*time.Minute, "how long the token can be used (once)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("token create: --id is required")
	}
	resp, err := admin.NewClient(filepath.Join(*dir, admin.SocketName)).CreateJoinToken(ctx, *id, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, resp.Token)
	return err
}

func runStatus(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	dir := fs.String("dir", stateDirDefault(), "state directory of the running server")
	format := fs.String("o", "table", "output: table or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	var st server.Status
	if err := admin.NewClient(filepath.Join(*dir, admin.SocketName)).Status(ctx, &st); err != nil {
		return err
	}
	if *format == "json" {
		st.Kubernetes = nil // not part of `certmesh status -o json` (yet): its output stays as it was
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return printStatusDoc(out, st)
}
