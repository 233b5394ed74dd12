package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/edge"
)

// statusDoc is what `certmesh status` reads from the admin socket.
type statusDoc struct {
	CA   ca.Status         `json:"ca"`
	Edge []edge.CertStatus `json:"edge,omitempty"`
}

func printStatusDoc(out io.Writer, st statusDoc) error {
	if err := printStatus(out, st.CA); err != nil {
		return err
	}
	if len(st.Edge) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EDGE CERTIFICATE\tISSUER\tNOT AFTER\tNEXT RENEWAL\tLAST ERROR")
	for _, c := range st.Edge {
		lastErr := c.Error
		if lastErr == "" {
			lastErr = "-"
		} else if !c.RetryAt.IsZero() {
			lastErr += " (retry at " + c.RetryAt.Format(time.RFC3339) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Issuer, fmtTime(c.NotAfter), fmtTime(c.NextRenewal), lastErr)
	}
	return tw.Flush()
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}
