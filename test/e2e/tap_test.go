package e2e

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tap is a TCP forwarder on loopback. It records the first bytes each client
// sends (the wire between two proxies, as an eavesdropper on the hop would see
// it), and serves as a plain hop in the unencrypted baseline chain.
type tap struct {
	lis    net.Listener
	target string
	mu     sync.Mutex
	conns  [][]byte // first recordLimit bytes each client sent
	open   map[net.Conn]struct{}
	wg     sync.WaitGroup
}

const recordLimit = 4096

func startTap(t testing.TB, target string) *tap {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tp := &tap{lis: lis, target: target, open: map[net.Conn]struct{}{}}
	tp.wg.Add(1)
	go tp.serve()
	t.Cleanup(tp.close)
	return tp
}

// close stops accepting, cuts the connections still open (idle keep-alive
// ones never end by themselves) and waits for every forwarder.
func (tp *tap) close() {
	_ = tp.lis.Close()
	tp.mu.Lock()
	for c := range tp.open {
		_ = c.Close()
	}
	tp.mu.Unlock()
	tp.wg.Wait()
}

func (tp *tap) track(c net.Conn, open bool) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if open {
		tp.open[c] = struct{}{}
	} else {
		delete(tp.open, c)
	}
}

func (tp *tap) addr() string { return tp.lis.Addr().String() }

func (tp *tap) serve() {
	defer tp.wg.Done()
	for {
		c, err := tp.lis.Accept()
		if err != nil {
			return
		}
		tp.wg.Add(1)
		go func() { defer tp.wg.Done(); tp.forward(c) }()
	}
}

func (tp *tap) forward(c net.Conn) {
	tp.track(c, true)
	defer func() { tp.track(c, false); _ = c.Close() }()
	up, err := net.DialTimeout("tcp", tp.target, 5*time.Second)
	if err != nil {
		return
	}
	tp.track(up, true)
	defer func() { tp.track(up, false); _ = up.Close() }()
	tp.mu.Lock()
	idx := len(tp.conns)
	tp.conns = append(tp.conns, nil)
	tp.mu.Unlock()
	rec := recorder{tp: tp, idx: idx}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(c, up)
		closeWrite(c)
		close(done)
	}()
	_, _ = io.Copy(up, io.TeeReader(c, &rec))
	closeWrite(up)
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

type recorder struct {
	tp  *tap
	idx int
}

func (r *recorder) Write(p []byte) (int, error) {
	r.tp.mu.Lock()
	defer r.tp.mu.Unlock()
	cur := r.tp.conns[r.idx]
	if room := recordLimit - len(cur); room > 0 {
		r.tp.conns[r.idx] = append(cur, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// recorded returns a copy of what clients sent, one entry per connection.
func (tp *tap) recorded() [][]byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	out := make([][]byte, len(tp.conns))
	for i, c := range tp.conns {
		out[i] = bytes.Clone(c)
	}
	return out
}

// tlsRecordHandshake is the first byte of a TLS handshake record.
const tlsRecordHandshake = 0x16

var errPlaintext = errors.New("plaintext on the wire")

// requireEncrypted checks that every recorded connection opened with a TLS
// handshake and that none of the plaintext markers appears anywhere in it.
func requireEncrypted(t testing.TB, conns [][]byte, markers ...string) {
	t.Helper()
	require.NotEmpty(t, conns, "the tap saw no connection")
	for i, c := range conns {
		if len(c) == 0 {
			continue // closed before sending (a refused dial)
		}
		require.Equal(t, byte(tlsRecordHandshake), c[0], "connection %d does not start with a TLS handshake: %q", i, c[:min(len(c), 32)])
		for _, m := range markers {
			require.False(t, bytes.Contains(c, []byte(m)), "%v: %q seen on connection %d", errPlaintext, m, i)
		}
	}
}
