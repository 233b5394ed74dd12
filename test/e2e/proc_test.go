package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// proc is a process the test started and stops (by its own pid) at cleanup.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *logBuf
	done chan error
}

// logBuf keeps a process's combined output for failure messages, bounded.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	if testing.Verbose() && os.Getenv("E2E_TRACE") != "" {
		_, _ = os.Stderr.Write(p)
	}
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// spec says how to start one process.
type spec struct {
	name  string
	bin   string
	args  []string
	uid   int // 0: as the test (root)
	env   []string
	stdin io.Reader
}

func start(t testing.TB, s spec) *proc {
	t.Helper()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = append(os.Environ(), s.env...)
	if s.uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.uid)}}
	}
	p := &proc{name: s.name, cmd: cmd, out: &logBuf{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr, cmd.Stdin = p.out, p.out, s.stdin
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL // never outlive the test binary
	require.NoError(t, cmd.Start(), "start %s", s.name)
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop interrupts the process and kills it if it has not gone within 5 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		p.done <- nil // keep stop idempotent
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		err := <-p.done
		p.done <- err
	}
}

func (p *proc) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

func (p *proc) String() string { return fmt.Sprintf("%s output:\n%s", p.name, p.out) }

// waitLine waits (bounded) until the process printed a line with prefix and
// returns the rest of that line.
func (p *proc) waitLine(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(p.out.String()))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				return v
			}
		}
		require.False(t, p.exited(), "%s exited early\n%s", p.name, p)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s printed no %q within %s\n%s", p.name, prefix, timeout, p)
	return ""
}

func credential(uid int) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
}
