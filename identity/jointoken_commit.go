package identity

import (
	"fmt"
	"sync"
	"time"
)

// groupCommit makes redemptions durable in batches. A redeemed token must be
// on disk before the caller gets its identity (or a restart would make it
// redeemable again), but one fsync per redemption serializes a burst of
// joins behind the disk. Instead the first waiter writes the whole state for
// everyone marked so far while later ones wait for that write; a failed
// write un-redeems exactly the tokens of its batch.
type groupCommit struct {
	cond    *sync.Cond
	gen     uint64   // redemptions marked so far
	durable uint64   // redemptions covered by a finished write
	pending []string // hashes marked since the last write began
	writing bool
	failed  []failedBatch
}

type failedBatch struct {
	from, upto uint64 // generations (from, upto]
	err        error
}

// maxFailedBatches bounds the memory of past failures; waiters only ever
// look at batches that finished while they waited.
const maxFailedBatches = 64

// commitLocked waits until the redemption of hash is durable and returns
// the write error if its batch failed. j.mu must be held; it is released
// while writing or waiting.
func (j *JoinTokens) commitLocked(hash string, now time.Time) error {
	c := &j.commit
	if c.cond == nil {
		c.cond = sync.NewCond(&j.mu)
	}
	c.gen++
	mine := c.gen
	c.pending = append(c.pending, hash)
	for c.durable < mine {
		if c.writing {
			c.cond.Wait()
			continue
		}
		j.writeBatchLocked(now)
	}
	for _, f := range c.failed {
		if mine > f.from && mine <= f.upto {
			return f.err
		}
	}
	return nil
}

// writeBatchLocked writes the state once for every redemption marked so far.
func (j *JoinTokens) writeBatchLocked(now time.Time) {
	c := &j.commit
	c.writing = true
	batch, from, upto := c.pending, c.durable, c.gen
	c.pending = nil
	data, err := j.encodeLocked(now)
	j.mu.Unlock()
	if err == nil && j.store != nil {
		if err = j.store.Save(data); err != nil {
			err = fmt.Errorf("identity: join tokens: save: %w", err)
		}
	}
	j.mu.Lock()
	c.writing = false
	if err != nil {
		// Not persisted means not redeemed: refuse rather than risk the
		// tokens being redeemable again after a restart.
		for _, h := range batch {
			if rec, ok := j.tokens[h]; ok {
				rec.Used = false
				j.tokens[h] = rec
			}
		}
		c.failed = append(c.failed, failedBatch{from: from, upto: upto, err: err})
		if len(c.failed) > maxFailedBatches {
			c.failed = c.failed[1:]
		}
	}
	c.durable = upto
	c.cond.Broadcast()
}
