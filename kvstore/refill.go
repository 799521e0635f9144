package kvstore

import (
	"context"
	"sync"
	"time"
)

// refills runs the rebuilds of single partitions in the background, one
// goroutine each, so that the follower reads the other partitions on
// meanwhile. One rebuild reads at a time (the others queue), so that their
// sorts together stay within RestoreMemory. A rebuild that fails for a reason that passes (the network,
// the broker) is tried again with a growing backoff; its partition shows
// as stalled in between. The follower collects finished rebuilds with done
// and adds their partitions back to its reader.
type refills struct {
	parent  context.Context
	run     func(ctx context.Context, p int32, guard Guard, reason string) (int64, error)
	stalled func(p int32, err error, retryIn time.Duration)
	bound   func() time.Duration // a rebuild at least this long exempts its partition (see slow)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	turn   chan struct{} // held by the rebuild that is reading

	mu      sync.Mutex
	running map[int32]bool
	slow    map[int32]bool // the last rebuild took longer than bound
	out     []refilled
}

// refilled is a finished rebuild of partition p: it reached next, or failed
// for good with err.
type refilled struct {
	p    int32
	next int64
	err  error
}

func newRefills[V any](ctx context.Context, s *Store[V]) *refills {
	rf := &refills{
		parent: ctx,
		run:    s.rebuildPartition,
		stalled: func(p int32, err error, retryIn time.Duration) {
			s.log.Warn("kvstore: rebuilding a partition failed, will try again", "partition", p, "err", err, "in", retryIn)
			s.reps.update(p, func(r *replica) {
				if r.state != PartitionStopped {
					r.state, r.err, r.stallBy = PartitionStalled, err, stallRebuild
				}
			})
		},
		bound:   s.staleBound,
		running: map[int32]bool{},
		slow:    map[int32]bool{},
		turn:    make(chan struct{}, 1),
	}
	rf.ctx, rf.cancel = context.WithCancel(ctx)
	return rf
}

// start rebuilds partition p in the background, unless it is being rebuilt
// already. The caller has stopped reading p.
func (rf *refills) start(p int32, guard Guard, reason string) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.running[p] {
		return
	}
	rf.running[p] = true
	ctx := rf.ctx
	rf.wg.Go(func() {
		backoff := stallBackoff
		for {
			select {
			case rf.turn <- struct{}{}:
			case <-ctx.Done():
				return
			}
			began := time.Now()
			next, err := rf.run(ctx, p, guard, reason)
			<-rf.turn
			if ctx.Err() != nil {
				return
			}
			if err == nil || permanent(err) {
				rf.mu.Lock()
				rf.out = append(rf.out, refilled{p: p, next: next, err: err})
				rf.slow[p] = time.Since(began) >= rf.bound()
				rf.mu.Unlock()
				return
			}
			rf.stalled(p, err, backoff)
			sleepCtx(ctx, backoff)
			backoff = min(2*backoff, maxStallBackoff)
		}
	})
}

// done returns the rebuilds finished since the last call; their partitions
// are no longer busy.
func (rf *refills) done() []refilled {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	out := rf.out
	rf.out = nil
	for _, d := range out {
		delete(rf.running, d.p)
	}
	return out
}

// busy says whether partition p is being rebuilt (or rebuilt and not yet
// collected with done).
func (rf *refills) busy(p int32) bool {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return rf.running[p]
}

// exempt says whether p's last rebuild took longer than the staleness
// bound: rebuilding it again could not do better, and would start over for
// ever.
func (rf *refills) exempt(p int32) bool {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return rf.slow[p]
}

// stop cancels every rebuild and waits for them: a full rebuild follows,
// or the follower ends. Later starts run under a fresh context.
func (rf *refills) stop() {
	rf.cancel()
	rf.wg.Wait()
	rf.mu.Lock()
	defer rf.mu.Unlock()
	clear(rf.running)
	clear(rf.slow)
	rf.out = nil
	rf.ctx, rf.cancel = context.WithCancel(rf.parent)
}
