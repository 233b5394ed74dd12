package edge

import (
	"flag"
	"io"
	stdlog "log"
	"testing"

	legolog "github.com/go-acme/lego/v4/log"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Verbose() {
		legolog.Logger = stdlog.New(io.Discard, "", 0)
	}
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}
