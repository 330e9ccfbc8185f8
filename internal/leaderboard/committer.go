package leaderboard

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rallyhq/rally/internal/store"
)

// committer is the embedded backend's group commit: writers append their
// changes to the open batch and wait; one goroutine writes each batch in a
// single store transaction (one fsync), so concurrent writers share the
// cost of durability instead of queueing behind one fsync each.
type committer struct {
	st     store.Store
	bucket string
	m      *commitMetrics

	mu      sync.Mutex
	cur     *batch
	pending int
	closed  bool
	wake    chan struct{}
	done    chan struct{}
}

type batch struct {
	ops  []storeOp
	done chan struct{}
	err  error
}

// storeOp is one key to put, or to delete when del is set.
type storeOp struct {
	key string
	val []byte
	del bool
}

var errClosed = errors.New("leaderboard: closed")

func newCommitter(st store.Store, bucket string, m *commitMetrics) *committer {
	c := &committer{st: st, bucket: bucket, m: m, cur: newBatch(), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.run()
	return c
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// add queues ops for the next commit and returns the batch to wait on.
// Ops of one call land in one transaction, in order.
func (c *committer) add(ops ...storeOp) (*batch, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClosed
	}
	b := c.cur
	b.ops = append(b.ops, ops...)
	c.pending += len(ops)
	c.m.commitQueue.Set(float64(c.pending))
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return b, nil
}

// wait blocks until the batch is durable (or failed). It does not give up
// with a caller's context: the write is already in the batch, and its
// outcome must be what the caller hears.
func (b *batch) wait() error {
	<-b.done
	return b.err
}

// barrier returns once everything queued before it is durable.
func (c *committer) barrier() error {
	b, err := c.add()
	if err != nil {
		return err
	}
	return b.wait()
}

func (c *committer) run() {
	defer close(c.done)
	for {
		<-c.wake
		c.mu.Lock()
		b, closed := c.cur, c.closed
		c.cur = newBatch()
		c.pending = 0
		c.m.commitQueue.Set(0)
		c.mu.Unlock()
		if len(b.ops) > 0 {
			start := time.Now()
			b.err = c.write(b.ops)
			c.m.commitSeconds.Observe(time.Since(start).Seconds())
			c.m.commitBatch.Observe(float64(len(b.ops)))
			if b.err != nil {
				c.m.commitErrors.Inc()
			}
		}
		close(b.done)
		if closed {
			return
		}
	}
}

// write applies ops in order: puts are grouped into one PutMany until a
// delete interrupts them (deletes are rare: a removed record).
func (c *committer) write(ops []storeOp) error {
	ctx := context.Background()
	puts := make(map[string][]byte, len(ops))
	flush := func() error {
		if len(puts) == 0 {
			return nil
		}
		err := c.st.PutMany(ctx, c.bucket, puts)
		clear(puts)
		return err
	}
	for _, op := range ops {
		if !op.del {
			puts[op.key] = op.val
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if err := c.st.Delete(ctx, c.bucket, op.key); err != nil {
			return err
		}
	}
	return flush()
}

// close commits what is queued and stops; later adds fail.
func (c *committer) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.done
		return
	}
	c.closed = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.done
}
