package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/certmesh/certmesh/ca/admin"
)

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
	var st statusDoc
	if err := admin.NewClient(filepath.Join(*dir, admin.SocketName)).Status(ctx, &st); err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return printStatusDoc(out, st)
}
