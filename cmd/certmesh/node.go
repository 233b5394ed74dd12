package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"

	"github.com/certmesh/certmesh/ca/admin"
	"github.com/certmesh/certmesh/identity"
)

// runNode is `certmesh node list|evict|ban`, SPIRE's `agent list|evict|ban`:
// an evicted node's SVIDs are refused from the next request on and it may
// join again with a new token; a banned one may not.
func runNode(ctx context.Context, args []string, out io.Writer) error {
	const use = "node: want `node list`, `node evict SPIFFE_ID` or `node ban SPIFFE_ID`"
	if len(args) == 0 {
		return fmt.Errorf("%s", use)
	}
	action := args[0]
	fs := flag.NewFlagSet("node "+action, flag.ContinueOnError)
	dir := fs.String("dir", stateDirDefault(), "state directory of the running server")
	format := fs.String("o", "table", "output: table or json")
	rest := args[1:]
	var id string
	switch action {
	case "list":
	case "evict", "ban":
		if len(rest) == 0 || rest[0] == "" || rest[0][0] == '-' {
			return fmt.Errorf("node %s: want the node agent's SPIFFE ID, e.g. spiffe://example.org%sn1", action, identity.NodePathPrefix)
		}
		id, rest = rest[0], rest[1:]
	default:
		return fmt.Errorf("%s (got %q)", use, action)
	}
	if err := parse(fs, rest); err != nil {
		return err
	}
	client := admin.NewClient(filepath.Join(*dir, admin.SocketName))
	var nodes []identity.Node
	if action == "list" {
		if err := client.Nodes(ctx, &nodes); err != nil {
			return err
		}
	} else {
		var n identity.Node
		if err := client.SetNode(ctx, action, id, &n); err != nil {
			return err
		}
		nodes = []identity.Node{n}
	}
	if *format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(nodes)
	}
	return printNodes(out, nodes)
}

func printNodes(out io.Writer, nodes []identity.Node) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tFIRST SEEN\tLAST SEEN\tSINCE")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.ID, n.State, fmtTime(n.FirstSeen), fmtTime(n.LastSeen), fmtTime(n.Since))
	}
	return tw.Flush()
}
