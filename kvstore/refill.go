package kvstore

import (
	"context"
	"errors"
	"sync"
	"time"
)

// refills runs the rebuilds of single partitions in the background, one
// goroutine each, so that the follower reads the other partitions on
// meanwhile. One rebuild reads at a time (the others queue, owned and
// incoming partitions before other standbys), so that their sorts together stay within
// RestoreMemory. A rebuild that fails for a reason that passes (the network,
// the broker) is tried again with a growing backoff; its partition shows
// as stalled in between. The follower collects finished rebuilds with done
// and adds their partitions back to its reader.
type refills struct {
	parent  context.Context
	run     func(ctx context.Context, p int32, guard Guard, reason string, still func() bool) (int64, error)
	still   func(p int32) func() bool
	ahead   func(p int32) bool // partitioned mode: owned and incoming partitions take their turn before other standbys
	stalled func(p int32, err error, retryIn time.Duration)
	bound   func() time.Duration // a rebuild at least this long exempts its partition (see slow)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	turn   chan struct{} // held by the rebuild that is reading

	mu      sync.Mutex
	running map[int32]bool
	waiting map[int32]bool      // waiting for their turn
	again   map[int32]refillReq // asked for while an earlier one was running: started when it ends
	slow    map[int32]bool      // the last rebuild took longer than bound
	out     []refilled
}

type refillReq struct {
	guard  Guard
	reason string
}

// refilled is a finished rebuild of partition p: it reached next, or failed
// for good with err, or (stale) gave up because the partition was given up
// or taken on again since it began, swapping nothing in.
type refilled struct {
	p     int32
	next  int64
	err   error
	stale bool
}

func newRefills[V any](ctx context.Context, s *Store[V]) *refills {
	rf := &refills{
		parent: ctx,
		run:    s.rebuildPartition,
		still:  s.reps.still,
		ahead: func(p int32) bool {
			r := s.reps.all[p]
			r.mu.RLock()
			defer r.mu.RUnlock()
			return r.role == RoleOwner || r.incoming
		},
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
		waiting: map[int32]bool{},
		again:   map[int32]refillReq{},
		slow:    map[int32]bool{},
		turn:    make(chan struct{}, 1),
	}
	rf.ctx, rf.cancel = context.WithCancel(ctx)
	return rf
}

// start rebuilds partition p in the background; if an earlier rebuild of
// p is still running, this one starts when it ends. The caller has stopped
// reading p.
func (rf *refills) start(p int32, guard Guard, reason string) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.running[p] {
		rf.again[p] = refillReq{guard, reason}
		return
	}
	rf.running[p] = true
	ctx, still := rf.ctx, rf.still(p)
	rf.wg.Go(func() {
		backoff := stallBackoff
		for {
			if !rf.takeTurn(ctx, p) {
				return
			}
			if !still() { // given up (or taken on again) while it waited its turn
				<-rf.turn
				rf.finish(refilled{p: p, stale: true}, 0)
				return
			}
			began := time.Now()
			next, err := rf.run(ctx, p, guard, reason, still)
			<-rf.turn
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errStaleRefill) {
				rf.finish(refilled{p: p, stale: true}, 0)
				return
			}
			if err == nil || permanent(err) {
				rf.finish(refilled{p: p, next: next, err: err}, time.Since(began))
				return
			}
			rf.stalled(p, err, backoff)
			sleepCtx(ctx, backoff)
			backoff = min(2*backoff, maxStallBackoff)
		}
	})
}

// takeTurn waits until p's rebuild may read: one at a time, and a standby's
// only while no owned or incoming partition's waits (Kafka Streams, too,
// restores active tasks before it updates standbys; an incoming one is
// about to be owned). false if ctx ended.
func (rf *refills) takeTurn(ctx context.Context, p int32) bool {
	rf.mu.Lock()
	rf.waiting[p] = true
	rf.mu.Unlock()
	defer func() {
		rf.mu.Lock()
		delete(rf.waiting, p)
		rf.mu.Unlock()
	}()
	for {
		if rf.ahead(p) || !rf.aheadWaiting() {
			select {
			case rf.turn <- struct{}{}:
				if rf.ahead(p) || !rf.aheadWaiting() {
					return true
				}
				<-rf.turn // an owned one came meanwhile: after it
			case <-ctx.Done():
				return false
			case <-time.After(20 * time.Millisecond): // look again: roles change
			}
			continue
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// aheadWaiting says whether the rebuild of an owned or incoming partition
// waits for its turn.
func (rf *refills) aheadWaiting() bool {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	for q := range rf.waiting {
		if rf.ahead(q) {
			return true
		}
	}
	return false
}

// finish reports a rebuild's end to done.
func (rf *refills) finish(d refilled, took time.Duration) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	rf.out = append(rf.out, d)
	if !d.stale {
		rf.slow[d.p] = took >= rf.bound()
	}
}

// done returns the rebuilds finished since the last call; their partitions
// are no longer busy, unless another rebuild was asked for meanwhile: it
// starts now.
func (rf *refills) done() []refilled {
	rf.mu.Lock()
	out := rf.out
	rf.out = nil
	var restart []int32
	for _, d := range out {
		delete(rf.running, d.p)
		if _, ok := rf.again[d.p]; ok {
			restart = append(restart, d.p)
		}
	}
	rf.mu.Unlock()
	for _, p := range restart {
		rf.mu.Lock()
		req := rf.again[p]
		delete(rf.again, p)
		rf.mu.Unlock()
		rf.start(p, req.guard, req.reason)
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

// idle says whether no rebuild runs, nor waits to be collected with done.
func (rf *refills) idle() bool {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return len(rf.running) == 0
}

// exempt says whether p's last rebuild took longer than the staleness
// bound: rebuilding it again could not do better, and would start over for
// ever.
func (rf *refills) exempt(p int32) bool {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return rf.slow[p]
}

// markSlow records that gs were rebuilt (in one pass) in longer than the
// staleness bound, as a refill that long records its partition: exempt.
func (rf *refills) markSlow(gs []partGuard) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	for _, g := range gs {
		rf.slow[g.p] = true
	}
}

// stop cancels every rebuild and waits for them: a full rebuild follows,
// or the follower ends. Later starts run under a fresh context.
func (rf *refills) stop() {
	rf.cancel()
	rf.wg.Wait()
	rf.mu.Lock()
	defer rf.mu.Unlock()
	clear(rf.running)
	clear(rf.again)
	clear(rf.slow)
	rf.out = nil
	rf.ctx, rf.cancel = context.WithCancel(rf.parent)
}
