package kvstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
	"github.com/compactkv/compactkv/serde"
)

const (
	// probeEvery is how often the follower asks the broker for the end
	// offsets, to tell how far behind it is (Stats) and that the broker
	// answers at all.
	probeEvery = time.Second
	// probeTimeout bounds one such request; past it the partitions show as
	// stalled.
	probeTimeout = 5 * time.Second
	// currentEvery is how often a caught-up follower records in the cache
	// file that it is current, for the next Open's retention guard.
	currentEvery = 5 * time.Second
	// staleRebuildFloor is the least staleness that makes a running
	// follower rebuild, whatever delete.retention.ms says: its view of its
	// own freshness is only as fine as probeEvery plus a probe's latency,
	// and a topic whose tombstones last less than that cannot be followed
	// safely anyway (Open rebuilds every time on such a topic).
	staleRebuildFloor = 10 * time.Second
	// stallBackoff is how long the follower waits after a failed fetch or
	// rebuild before it tries again; it doubles with each failure in a row,
	// up to maxStallBackoff.
	stallBackoff    = time.Second
	maxStallBackoff = 30 * time.Second
)

// follow applies what other writers (and this store) write, until ctx ends.
// pos is where r is positioned. The follower never gives up on a broker that
// cannot be reached: the partitions show as stalled (Stats, TailErr) until it
// answers again. It rebuilds the cache from the topic when the records it
// would read next are gone (a gap), or when a partition has not been caught
// up for longer than the topic's delete.retention.ms (tombstones it has not
// read may be gone). It stops for good only on an error that retrying
// cannot mend: a poison record under PoisonFail, or a cache file that cannot
// be written.
func (s *Store[V]) follow(ctx context.Context, r *changelog.Reader, pos map[int32]int64) {
	defer func() {
		if r != nil {
			go r.Close() // can take a second with the broker gone: Close need not wait
		}
	}()
	var (
		rebuild Guard // a rebuild of the whole file still to do, GuardNone if none
		reason  string
		backoff = stallBackoff
	)
	// stalled waits before the next try, longer each time in a row.
	stalled := func() {
		sleepCtx(ctx, backoff)
		backoff = min(2*backoff, maxStallBackoff)
	}
	// One partition is rebuilt in the background, and the others read on:
	// they keep their place in the reader.
	refills := newRefills(ctx, s)
	defer refills.stop()
	rebuildAlone := func(p int32, guard Guard, why string) {
		r.Remove(p)
		refills.start(p, guard, why)
	}
	if held := s.takeOverlaid(); len(held.polls) > 0 {
		// Open's delta restore: its records are served from the overlay
		// and go into the file before anything polled (overlay.go).
		if h := testHookOverlaid.Load(); h != nil {
			select {
			case <-*h:
			case <-ctx.Done():
				return
			}
		}
		began := time.Now()
		if err := s.writeOverlaid(ctx, held); err != nil {
			if ctx.Err() != nil {
				return
			}
			if !errors.Is(err, errDamaged) {
				s.stop(err)
				return
			}
			rebuild, reason = GuardCorrupt, "cache file damaged: "+err.Error()
		} else {
			s.log.Debug("kvstore: the delta restore's records are in the cache file", "polls", len(held.polls), "took", time.Since(began))
		}
	}
	for ctx.Err() == nil {
		s.markCurrent()
		for _, d := range refills.done() {
			switch {
			case d.stale: // given up meanwhile; if taken on again, that has its own restore
			case !s.reps.followed(d.p): // partitioned mode: it went to another member meanwhile
				s.reps.unfollow(d.p)
			case d.err != nil:
				s.stop(d.err)
				return
			default:
				pos[d.p] = d.next
				r.Add(map[int32]int64{d.p: d.next})
			}
		}
		if r != nil {
			if _, ok := s.takeView(); ok {
				together, after := s.applyView(ctx, r, pos, refills)
				s.restoreGained(ctx, r, pos, refills, together, after)
			}
		}
		if rebuild != GuardNone {
			refills.stop() // the whole file is rebuilt: those partitions too
			if r != nil {
				go r.Close()
				r = nil
			}
			rebuildAll := s.rebuild
			if s.grp != nil { // partitioned mode: never the whole topic
				rebuildAll = s.resetPartitioned
			}
			nr, npos, err := rebuildAll(ctx, rebuild, reason)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if permanent(err) {
					s.stop(err)
					return
				}
				s.log.Warn("kvstore: rebuilding the cache failed, will try again", "err", err, "in", backoff)
				s.reps.setAll(PartitionStalled, err)
				stalled()
				continue
			}
			r, pos = nr, npos
			rebuild, backoff = GuardNone, stallBackoff
			if s.grp != nil { // partitioned mode: follow what the roles say, whatever views came meanwhile
				s.takeView()
				together, after := s.applyView(ctx, r, pos, refills)
				s.restoreGained(ctx, r, pos, refills, together, after)
			}
			continue
		}

		pctx, cancel := s.pollContext(ctx)
		bs, err := r.Poll(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		// Checked after the poll and before its records are applied: what
		// a poll that outlived the bound brings may lack tombstones.
		stale, why, all := s.retentionExceeded(refills)
		if all {
			rebuild, reason = GuardRetentionExceeded, why
			continue // the rebuild reads these records again
		}
		for _, p := range stale {
			rebuildAlone(p, GuardRetentionExceeded, why)
		}
		if len(stale) > 0 {
			// The reader has moved past the other partitions' records in
			// bs: they are applied now. The stale ones' records are read
			// again by their rebuilds.
			bs = slices.DeleteFunc(bs, func(b changelog.Batch) bool { return slices.Contains(stale, b.Partition) })
		}
		if s.damaged.CompareAndSwap(true, false) {
			rebuild, reason = GuardCorrupt, "a read met a damaged cache file"
			continue
		}
		if len(bs) > 0 {
			if aerr := s.applyTail(ctx, bs, false, nil); aerr != nil {
				if ctx.Err() != nil {
					return
				}
				if errors.Is(aerr, errDamaged) {
					rebuild, reason = GuardCorrupt, "cache file damaged: "+aerr.Error()
					continue // the rebuild reads these records again
				}
				s.stop(aerr)
				return
			}
			for _, b := range bs {
				pos[b.Partition] = b.Next
				s.reps.applied(b.Partition, b.Next)
			}
		}
		switch {
		case err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled): // a new view of the group ends a poll early
			s.reps.recover(stallFetch)
			backoff = stallBackoff
		case errors.Is(err, changelog.ErrGap):
			why := "records the follower had not read yet are gone: " + err.Error()
			var pe *changelog.PartitionError
			if !errors.As(err, &pe) || pe.Partition < 0 || pe.Partition >= s.info.Partitions {
				rebuild, reason = GuardBelowLogStart, why
				break
			}
			if !refills.busy(pe.Partition) { // else a late report of the gap its rebuild mends
				rebuildAlone(pe.Partition, GuardBelowLogStart, why)
			}
		default:
			s.stall(err)
			stalled()
		}
	}
}

// stop stops following for good, with err as the cause.
//
// In partitioned mode the member then leaves the group, so that its
// partitions move to members that can serve them.
func (s *Store[V]) stop(err error) {
	s.reps.setAll(PartitionStopped, err)
	s.log.Error("kvstore: following the topic stopped", "err", err)
	if s.grp != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.closeTimeout)
			defer cancel()
			s.leave(ctx)
		}()
	}
}

// permanent says whether err is one that trying again cannot mend: a poison
// record, or the cache's file system refusing a write (a full disk, a
// read-only file). Errors of the network, the broker and the registry are
// not: they pass.
func permanent(err error) bool {
	var pe *PoisonError
	if errors.As(err, &pe) {
		return true
	}
	var ne net.Error
	var ce *changelog.PartitionError
	if errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, changelog.ErrGap) ||
		errors.Is(err, serde.ErrRegistryUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pathErr *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pathErr) || errors.As(err, &errno)
}

// probeLoop asks the broker for the end offsets every probeEvery, until ctx
// ends, on a goroutine of its own so that a slow broker never holds up the
// follower's reads.
func (s *Store[V]) probeLoop(ctx context.Context) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		s.probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stall marks the partition err names (every partition if it names none)
// as stalled.
func (s *Store[V]) stall(err error) {
	s.log.Warn("kvstore: following the topic stalled, retrying", "err", err)
	var pe *changelog.PartitionError
	if errors.As(err, &pe) && pe.Partition >= 0 && pe.Partition < s.info.Partitions {
		s.reps.stallFetch(pe.Partition, err)
		return
	}
	for p := range s.info.Partitions {
		s.reps.stallFetch(p, err)
	}
}

// rebuild rebuilds the cache from the start of the topic and returns a
// reader positioned where it ends.
func (s *Store[V]) rebuild(ctx context.Context, guard Guard, reason string) (*changelog.Reader, map[int32]int64, error) {
	lctx, cancel := context.WithTimeout(ctx, probeTimeout)
	lo, err := s.listOffsets(lctx)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	return s.runRestore(ctx, guard, reason, lo.start, lo, nil)
}

// retentionExceeded returns the partitions that have not been caught up
// for longer than the topic's delete.retention.ms (and staleRebuildFloor)
// while the store was following them: records they have yet to read may
// have lost their tombstones to compaction, and reading on would keep
// deleted keys. all says every partition is: one full restore (the page
// writer) is then the faster way. why is the first one's reason.
// Partitions being rebuilt are left out, and so are those whose last
// rebuild itself took longer than the bound, and every partition when the
// last full or delta restore did: rebuilding could not do better, and
// would start over for ever (runRestore warns).
func (s *Store[V]) retentionExceeded(rf *refills) (stale []int32, why string, all bool) {
	now := time.Now()
	bound := s.staleBound()
	if last := s.lastRestore(); last.Mode != "partition" && last.Duration >= bound {
		return nil, "", false
	}
	snap := s.reps.snapshot()
	for _, ps := range snap {
		if rf.busy(ps.Partition) || rf.exempt(ps.Partition) || ps.State == PartitionIdle {
			continue
		}
		if age := now.Sub(ps.CaughtUpAt); age > bound {
			if len(stale) == 0 {
				why = fmt.Sprintf("partition %d last caught up %v ago, longer than delete.retention.ms (%v): deleted keys could come back",
					ps.Partition, age.Round(time.Millisecond), s.info.DeleteRetention)
			}
			stale = append(stale, ps.Partition)
		}
	}
	// In partitioned mode partitions are never rebuilt all at once: a full
	// restore would read the partitions other members own.
	return stale, why, s.grp == nil && len(stale) == len(snap)
}

// staleBound is how long a partition may go without being caught up before
// the follower rebuilds it: delete.retention.ms, at least staleRebuildFloor.
func (s *Store[V]) staleBound() time.Duration {
	floor := staleRebuildFloor
	if f := testHookStaleRebuildFloor.Load(); f != nil {
		floor = *f
	}
	return max(s.info.DeleteRetention, floor)
}

// testHookOverlaid, when set, holds the follower before it writes what
// Open's delta restore left in the overlay until the channel is closed.
var testHookOverlaid atomic.Pointer[chan struct{}]

// testHookStaleRebuildFloor, when set, replaces staleRebuildFloor.
var testHookStaleRebuildFloor atomic.Pointer[time.Duration]

// probe asks the broker for the end offsets, bounded by probeTimeout, and
// records them. A broker that does not answer stalls every partition; one
// that answers clears the stalls a probe caused.
func (s *Store[V]) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	at := time.Now()
	end, err := s.tp.EndOffsets(pctx)
	if err != nil {
		if ctx.Err() == nil {
			s.reps.stallAll(fmt.Errorf("kvstore: list end offsets of %q: %w", s.topic, err))
		}
		return
	}
	for p, e := range end {
		if p >= 0 && p < s.info.Partitions {
			s.reps.observe(p, e, at)
		}
	}
	s.reps.recover(stallProbe)
}

// markCurrent records in the cache file the time up to which each
// partition is caught up, for those whose time moved by currentEvery since
// the file last recorded it.
func (s *Store[V]) markCurrent() {
	at := s.reps.toMark(currentEvery)
	if at == nil {
		return
	}
	if err := s.updateCache(func(tx *bolt.Tx) error { return putCurrent(tx, at) }); err != nil {
		s.log.Warn("kvstore: cannot record that the cache is current", "err", err)
		return
	}
	s.reps.marked(at)
}

// Test hooks, nil outside tests: testHookCommitted runs in applyTail right
// after the batches' commit, testHookLateWindow between the overlay's
// advance and the commit of own writes the batches did not carry.
var testHookCommitted, testHookLateWindow func()

// applyTail applies batches and advances the overlay past them; screened
// says the batches went through the poison screen and the misrouted-key
// check already (a delta restore's, overlay.go), which are not repeated,
// and current, if not nil, is recorded as the time each of its partitions
// was current (the partitions toMark names too).
func (s *Store[V]) applyTail(ctx context.Context, bs []changelog.Batch, screened bool, current map[int32]time.Time) error {
	if len(bs) == 0 {
		return nil
	}
	// An own write the batches pass without carrying it (or anything newer
	// of its key) was compacted away before the follower read it: a
	// tombstone whose delete.retention.ms ran out, or a value whose newer
	// tombstone did. The own write is then the key's latest state and goes
	// into the file with the batches, or the key would come back.
	own := map[int32][]ownWrite{}
	for i := range bs {
		if ws := s.reps.all[bs[i].Partition].unseen(&bs[i]); len(ws) > 0 {
			own[bs[i].Partition] = ws
		}
	}
	// The commit runs without the replicas' locks, so Puts never wait for
	// the cache's fsync. Until the replicas advance just below, a Get may
	// still see an own write the file now holds a newer version of: the
	// same as if the follower were those microseconds slower.
	for p, t := range s.reps.toMark(currentEvery) { // piggybacked: saves markCurrent a commit of its own
		if current == nil {
			current = map[int32]time.Time{}
		}
		if t.After(current[p]) {
			current[p] = t
		}
	}
	apply := s.applyBatchesWith
	if screened {
		apply = func(_ context.Context, bs []changelog.Batch, own map[int32][]ownWrite, current map[int32]time.Time) error {
			return s.writeBatches(bs, own, current)
		}
	}
	if err := apply(ctx, bs, own, current); err != nil {
		return err
	}
	s.reps.marked(current)
	if testHookCommitted != nil {
		testHookCommitted()
	}
	late := map[int32][]ownWrite{} // acknowledged during the commit: they stay until they are in the file
	for i := range bs {
		if ws := s.reps.all[bs[i].Partition].advance(&bs[i], own[bs[i].Partition]); len(ws) > 0 {
			late[bs[i].Partition] = append(late[bs[i].Partition], ws...)
		}
	}
	if len(late) == 0 {
		return nil
	}
	if testHookLateWindow != nil {
		testHookLateWindow()
	}
	err := s.updateCache(func(tx *bolt.Tx) error {
		for p, ws := range late {
			if err := writeOwn(tx, s.reps.all[p], ws); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for p, ws := range late {
		s.reps.all[p].dropOwn(ws)
	}
	return nil
}

// TailErr returns why the store is not following its topic: the error that
// stopped it for good, or the one that stalls it for now (a broker that
// cannot be reached), naming the partition; nil while it follows. A stall
// clears by itself once the broker answers again. Meanwhile Get serves the
// cache as it was. Stats says more, per partition.
func (s *Store[V]) TailErr() error {
	for _, ps := range s.reps.snapshot() {
		if ps.Err != nil && (ps.State == PartitionStalled || ps.State == PartitionStopped) {
			return ps.Err
		}
	}
	return nil
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
