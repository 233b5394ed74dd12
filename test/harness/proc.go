package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Spec says how to start one process.
type Spec struct {
	Name  string // in failure messages; default: Path
	Path  string
	Args  []string
	Dir   string    // working directory; default: the test's
	UID   int       // run as this uid (and gid); 0: as the test
	Env   []string  // added to the test's environment
	Stdin io.Reader // an *os.File is handed to the process as is
	// StopGrace is how long Stop waits after SIGINT before SIGKILL; default 10 s.
	StopGrace time.Duration
}

// What a Proc keeps of its output, at most.
const (
	maxKeptBytes = 1 << 20
	maxKeptLines = 100_000
)

// Proc is a process the test started. It runs in its own process group and
// is stopped (Stop) when the test ends; it never outlives the test binary.
// Its stdout lines are kept for WaitLine and its combined output for
// failure messages.
type Proc struct {
	name  string
	cmd   *exec.Cmd
	grace time.Duration
	out   *logBuf // stdout and stderr
	errs  *logBuf // stderr
	lines *lineBuf
	done  chan struct{}
	err   error // valid once done is closed
	stop  sync.Once
}

// Start starts s and stops it when the test ends.
func Start(t testing.TB, s Spec) *Proc {
	t.Helper()
	name := s.Name
	if name == "" {
		name = s.Path
	}
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stdin, cmd.Dir = s.Stdin, s.Dir
	cmd.SysProcAttr = SysProcAttr(s.UID)
	cmd.SysProcAttr.Setpgid = true // Stop ends the whole group
	p := &Proc{name: name, cmd: cmd, grace: s.StopGrace, out: &logBuf{trace: tracing()}, errs: &logBuf{}, lines: newLineBuf(), done: make(chan struct{})}
	if p.grace == 0 {
		p.grace = 10 * time.Second
	}
	cmd.Stdout = io.MultiWriter(p.out, p.lines)
	cmd.Stderr = io.MultiWriter(p.out, p.errs)
	if err := cmd.Start(); err != nil {
		t.Fatalf("harness: start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		p.lines.close()
		close(p.done)
	}()
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

// SysProcAttr makes a process run as uid (and the gid of the same number;
// 0: as the test) and end with the test binary, for a command a test runs
// itself (exec.CommandContext, CombinedOutput).
func SysProcAttr(uid int) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if uid != 0 {
		a.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	}
	return a
}

// tracing: with -v and CERTMESH_TEST_TRACE set, every process's output is
// copied to the test's stderr as it comes.
func tracing() bool { return testing.Verbose() && os.Getenv("CERTMESH_TEST_TRACE") != "" }

// ErrKilled is what Stop returns when the process ignored SIGINT for its
// grace period and was killed.
var ErrKilled = errors.New("harness: killed after the stop grace period")

// Stop sends SIGINT (Ctrl-C) to the process group, waits for the process,
// and kills the group if it has not ended within the grace period. It
// returns the process's exit error (nil for a clean exit), or ErrKilled.
// Stop may be called more than once.
func (p *Proc) Stop() error {
	killed := false
	p.stop.Do(func() {
		_ = p.signalGroup(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(p.grace):
			killed = true
			_ = p.signalGroup(syscall.SIGKILL)
			<-p.done
		}
	})
	<-p.done
	if killed {
		return fmt.Errorf("%w (%s, %s)", ErrKilled, p.name, p.grace)
	}
	return p.err
}

// Kill sends SIGKILL to the process group, as a crash would, and waits.
func (p *Proc) Kill() {
	p.stop.Do(func() {
		_ = p.signalGroup(syscall.SIGKILL)
		<-p.done
	})
	<-p.done
}

// Signal sends sig to the process (not its group).
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

func (p *Proc) signalGroup(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stderr is what the process wrote to stderr so far (bounded).
func (p *Proc) Stderr() string { return p.errs.String() }

// Output is what the process wrote to stdout and stderr so far (bounded).
func (p *Proc) Output() string { return p.out.String() }

func (p *Proc) String() string { return fmt.Sprintf("%s output:\n%s", p.name, p.out) }

// WaitLine waits (at most timeout) for a stdout line that starts with
// prefix, after the line the previous WaitLine returned, and returns the
// rest of it. It fails the test if the process ends first.
func (p *Proc) WaitLine(t testing.TB, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		rest, found, more, changed := p.lines.next(prefix)
		if found {
			return rest
		}
		if !more {
			t.Fatalf("%s ended before printing %q: %v\n%s", p.name, prefix, p.waitErr(), p)
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s printed no %q within %s\n%s", p.name, prefix, timeout, p)
		}
	}
}

func (p *Proc) waitErr() error {
	<-p.done
	return p.err
}

// logBuf keeps a process's output for failure messages, bounded.
type logBuf struct {
	mu    sync.Mutex
	b     strings.Builder
	trace bool // also copy to the test's stderr
}

func (l *logBuf) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < maxKeptBytes {
		l.b.Write(b)
	}
	if l.trace {
		_, _ = os.Stderr.Write(b)
	}
	return len(b), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lineBuf splits what is written into lines for WaitLine.
type lineBuf struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	read    int           // lines before this one were consumed by WaitLine
	closed  bool          // the writer has ended: no more lines
	changed chan struct{} // closed (and replaced) when lines or closed change
}

func newLineBuf() *lineBuf { return &lineBuf{changed: make(chan struct{})} }

func (l *lineBuf) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	n := 0
	for {
		i := bytes.IndexByte(l.partial[n:], '\n')
		if i < 0 {
			break
		}
		if len(l.lines) < maxKeptLines {
			l.lines = append(l.lines, strings.TrimSuffix(string(l.partial[n:n+i]), "\r"))
		}
		n += i + 1
	}
	l.partial = append(l.partial[:0], l.partial[n:]...)
	if n > 0 {
		l.notify()
	}
	return len(b), nil
}

// close ends the buffer; a last line without a newline counts.
func (l *lineBuf) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.lines = append(l.lines, string(l.partial))
		l.partial = nil
	}
	l.closed = true
	l.notify()
}

func (l *lineBuf) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// next consumes lines up to the first that starts with prefix. more is
// false once no line can come any more; changed is closed when one might.
func (l *lineBuf) next(prefix string) (rest string, found, more bool, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.read < len(l.lines) {
		line := l.lines[l.read]
		l.read++
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v, true, true, nil
		}
	}
	return "", false, !l.closed, l.changed
}
