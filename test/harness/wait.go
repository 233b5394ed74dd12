package harness

import (
	"testing"
	"time"
)

// Poll bounds a wait: at most Timeout (0: no bound on time), at most Tries
// attempts (0: as many as fit), Every between attempts (default 50 ms). With
// neither bound set, cond is tried once.
type Poll struct {
	Timeout time.Duration
	Every   time.Duration
	Tries   int
	// Detail, if set, is added to the failure message (a process's
	// output: Detail: proc.String).
	Detail func() string
}

// WaitFor polls cond every 50 ms until it holds and returns how long that
// took; the test fails if it does not hold within timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return Poll{Timeout: timeout}.WaitFor(t, what, cond)
}

// WaitFor polls cond until it holds and returns how long that took; the
// test fails once p's time or tries are used up.
func (p Poll) WaitFor(t testing.TB, what string, cond func() bool) time.Duration {
	t.Helper()
	every := p.Every
	if every == 0 {
		every = 50 * time.Millisecond
	}
	start := time.Now()
	for try := 1; ; try++ {
		if cond() {
			return time.Since(start)
		}
		timeUp := p.Timeout > 0 && time.Since(start) > p.Timeout
		triesUp := p.Tries > 0 && try >= p.Tries
		if timeUp || triesUp || p.Timeout == 0 && p.Tries == 0 {
			detail := ""
			if p.Detail != nil {
				detail = "\n" + p.Detail()
			}
			t.Fatalf("%s: not within %v (%d tries)%s", what, p.Timeout, try, detail)
		}
		time.Sleep(every)
	}
}
