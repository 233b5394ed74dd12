package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/edge/ingress"
	"github.com/certmesh/certmesh/identity"
)

// statusDoc is what `certmesh status` reads from the admin socket.
type statusDoc struct {
	CA   ca.Status         `json:"ca"`
	Edge []edge.CertStatus `json:"edge,omitempty"`
	// Ingress holds the certificates of annotated Ingresses and Gateways (server
	// --ingress); only the leader replica, which orders them, lists any.
	Ingress []ingress.CertificateStatus `json:"ingressCertificates,omitempty"`
	// Registrations is the registrations file's state (server and dev with
	// --registrations).
	Registrations *identity.RegistrationsStatus `json:"registrations,omitempty"`
}

func printStatusDoc(out io.Writer, st statusDoc) error {
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Issuer, fmtTime(c.NotAfter), fmtTime(c.NextRenewal), lastError(c))
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
		return tw.Flush()
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
