package main

import (
	"io"

	"github.com/certmesh/certmesh/ca"
)

// statusDoc is what `certmesh status` reads from the admin socket.
type statusDoc struct {
	CA ca.Status `json:"ca"`
}

func printStatusDoc(out io.Writer, st statusDoc) error {
	return printStatus(out, st.CA)
}
