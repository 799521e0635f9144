package kvstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
)

const (
	// idleCheck is how long a restore waits for records of a partition that
	// has not reached its end offset before asking the broker again.
	idleCheck = 3 * time.Second
)

// restoreCache brings the cache file up to the topic's current end offsets,
// either from its checkpoint (delta) or by rebuilding it (full), and returns
// the open reader positioned where the cache ends so that the tail carries on
// from there.
func (s *Store[V]) restoreCache(ctx context.Context) (*changelog.Reader, map[int32]int64, error) {
	s.removeLeftovers()
	lo, err := s.listOffsets(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("kvstore: open %q: %w", s.topic, err)
	}
	guard, reason, next, bad, err := s.openExisting(lo.start, lo.end)
	if err != nil {
		return nil, nil, err
	}
	var refilled, refilledBytes int64
	done := map[int32]bool{}
	for todo := bad; len(todo) > 0; {
		for _, b := range todo {
			n, recs, nb, err := s.refillPartition(ctx, b.p, lo, b.guard, b.reason, nil)
			if err != nil {
				return nil, nil, err
			}
			next[b.p], refilled, refilledBytes = n, refilled+recs, refilledBytes+nb
			done[b.p] = true
		}
		// The refills took time: a partition that was current enough when
		// the guards looked may not be any more before its delta begins.
		if todo, err = s.expiredMeanwhile(done, lo); err != nil {
			return nil, nil, err
		}
	}
	var before *RestoreStats // the refills, which the restore's figures include
	if len(bad) > 0 {
		before = &RestoreStats{Mode: "partition", Reason: reason, Guard: guard, Records: refilled, Bytes: refilledBytes}
		guard = GuardNone // the other partitions: a delta from their checkpoints
	}
	if guard != GuardNone {
		next = lo.start
	}
	r, next, err := s.runRestore(ctx, guard, reason, next, lo, before)
	if errors.Is(err, changelog.ErrGap) {
		// Records went away under the restore (retention, DeleteRecords, or
		// the in-process broker's compaction): start over from the log start.
		reason := "records went away during the restore: " + err.Error()
		if lo, err = s.listOffsets(ctx); err != nil {
			return nil, nil, fmt.Errorf("kvstore: open %q: %w", s.topic, err)
		}
		r, next, err = s.runRestore(ctx, GuardBelowLogStart, reason, lo.start, lo, nil)
	}
	return r, next, err
}

// expiredMeanwhile judges again, now, the partitions not in done (not
// refilled yet), as partitionVerdict does at Open: refills take time, and
// a partition current enough when the guards first looked may have
// expired before its delta begins.
func (s *Store[V]) expiredMeanwhile(done map[int32]bool, lo listed) ([]partGuard, error) {
	m, err := readMeta(s.db)
	if err != nil {
		return nil, fmt.Errorf("kvstore: read the cache file's checkpoints: %w", err)
	}
	var out []partGuard
	now := time.Now()
	for p := range s.info.Partitions {
		if v := partitionVerdict(m, p, s.info, lo.start, lo.end, now); v != nil && !done[p] {
			out = append(out, *v)
		}
	}
	return out, nil
}

// listed is every partition's log start and end offsets, and a time taken
// before the broker was asked: a cache holding everything below end held
// everything the topic held at at.
type listed struct {
	start, end map[int32]int64
	at         time.Time
}

// listOffsets asks the broker for the start and end offsets.
func (s *Store[V]) listOffsets(ctx context.Context) (listed, error) {
	at := time.Now()
	start, end, err := s.tp.Offsets(ctx)
	return listed{start: start, end: end, at: at}, err
}

// runRestore reads from..lo.end into the cache: with guard GuardNone into
// the open cache (delta), otherwise into a new cache file that then replaces
// the current one (full). It returns the reader, positioned at the returned
// offsets, for the tail to carry on with. Every partition is restoring
// meanwhile, and following once it returns without error. before, if not
// nil, is what partition refills just before it did (Open's partial
// restore): the restore published is then theirs and this delta's together.
func (s *Store[V]) runRestore(ctx context.Context, guard Guard, reason string, from map[int32]int64, lo listed, before *RestoreStats) (*changelog.Reader, map[int32]int64, error) {
	began := time.Now()
	end := lo.end
	s.reps.setAll(PartitionRestoring, nil)
	mode := "delta"
	if guard != GuardNone {
		mode = "full"
		s.guards[guard].Add(1)
		if guard == GuardNoCache {
			s.log.Info("kvstore: full restore", "reason", reason)
		} else {
			s.log.Warn("kvstore: cache cannot be trusted, rebuilding it from the topic", "guard", guard.String(), "reason", reason)
		}
	}
	var total int64
	ranges := make([]PartitionRange, 0, len(from))
	for p := range s.info.Partitions {
		ranges = append(ranges, PartitionRange{Partition: p, Start: from[p], End: end[p]})
		total += max(0, end[p]-from[p])
	}
	if l := s.cfg.listener; l != nil {
		l.OnRestoreStart(RestoreStart{Mode: mode, Reason: reason, Guard: guard, Partitions: ranges})
	}
	prog := newProgress(s.log, s.cfg.progressEvery, total)

	r, err := s.tp.NewReader(from)
	if err != nil {
		return nil, nil, err
	}
	var (
		next            map[int32]int64
		records, nbytes int64
		read            time.Duration // of a full restore: reading and sorting, before writing the file
	)
	if mode == "full" {
		srt := newSorter(s.cfg.restoreMemory, s.cfg.dir, s.topic)
		srt.log = s.log
		defer srt.cleanup()
		next, records, nbytes, err = s.readUntil(ctx, r, from, end, prog, s.collectInto(ctx, srt))
		if err == nil {
			err = srt.drain()
		}
		read = time.Since(began)
		if err == nil {
			err = s.bulkLoad(srt, next, lo.at)
		}
		if err == nil {
			err = s.installCache(next)
		}
	} else {
		// The cache is current as of lo.at only once every partition has
		// reached end: the poll that brings the last one there records it
		// in its own transaction (a restore killed midway leaves the time
		// it was current before), else one more transaction does after
		// the reading.
		//
		// Read in Open, the records are held in memory instead, within
		// RestoreMemory, and written by the follower (overlay.go).
		pos, current := make(map[int32]int64, s.info.Partitions), false
		for p := range s.info.Partitions {
			pos[p] = from[p]
		}
		var ov *deltaOverlay
		if !s.opened {
			ov = newDeltaOverlay(s.cfg.restoreMemory)
		}
		next, records, nbytes, err = s.readUntil(ctx, r, from, end, prog, func(bs []changelog.Batch) error {
			if len(bs) == 0 {
				return nil
			}
			var at map[int32]time.Time
			if reachedAll(pos, bs, end) {
				at = allAt(s.info.Partitions, lo.at)
			}
			bs, err := s.screen(ctx, bs) // poison.go
			if err != nil {
				return err
			}
			s.checkPartitions(bs) // partition.go
			if ov != nil && ov.fits(bs, s.part, s.info.Partitions) {
				ov.hold(s.reps, bs)
				for _, b := range bs {
					pos[b.Partition] = b.Next
				}
				return nil
			}
			if ov != nil {
				// Not to be held: what is held goes into the file first,
				// a poll a transaction, then this poll, and the rest as
				// it comes.
				for _, held := range ov.held {
					if err := s.writeBatches(held, nil, nil); err != nil {
						return err
					}
				}
			}
			if err := s.writeBatches(bs, nil, at); err != nil {
				return err
			}
			for _, b := range bs {
				pos[b.Partition] = b.Next
			}
			if ov != nil {
				for p, n := range pos {
					s.reps.all[p].reset(n) // drops the overlay's entries: the file holds them
				}
				ov = nil
			}
			current = current || (at != nil && len(bs) > 0)
			return nil
		})
		if ov != nil && len(ov.held) > 0 {
			if err == nil {
				s.overlaid = overlaidPolls{polls: ov.held, currentAt: lo.at}
			} else {
				for _, rep := range s.reps.all {
					rep.forget() // nothing of it is served
				}
			}
		} else if err == nil && !current {
			err = s.updateCache(func(tx *bolt.Tx) error { return putCurrent(tx, allAt(s.info.Partitions, lo.at)) })
		}
	}
	if err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("kvstore: restore %q: %w", s.topic, err)
	}
	for p := range s.info.Partitions {
		if len(s.overlaid.polls) > 0 {
			s.reps.overlaid(p, from[p], end[p], lo.at)
		} else {
			s.reps.restored(p, next[p], end[p], lo.at)
		}
	}
	s.reps.setAll(PartitionFollowing, nil)
	st := RestoreStats{Mode: mode, Reason: reason, Guard: guard, Records: records, Bytes: nbytes,
		Duration: time.Since(began), Partitions: s.info.Partitions}
	if before != nil {
		st.Mode, st.Reason, st.Guard = before.Mode, before.Reason, before.Guard
		st.Records += before.Records
		st.Bytes += before.Bytes
	}
	if mode == "full" {
		s.log.Info("kvstore: restored", "mode", mode, "records", records, "bytes", nbytes, "duration", st.Duration,
			"reading", read, "writing", st.Duration-read)
	} else {
		s.log.Info("kvstore: restored", "mode", mode, "records", records, "bytes", nbytes, "duration", st.Duration)
	}
	if st.Duration > s.info.DeleteRetention {
		s.log.Warn("kvstore: full restore took longer than the topic's delete.retention.ms: tombstones written meanwhile may have been missed, raise delete.retention.ms",
			"duration", st.Duration, "delete_retention", s.info.DeleteRetention)
	}
	s.publishRestore(st)
	return r, next, nil
}

// publishRestore makes st the last restore Stats reports and tells the
// restore listener it ended.
func (s *Store[V]) publishRestore(st RestoreStats) {
	s.statsMu.Lock()
	s.restore = st
	s.statsMu.Unlock()
	if l := s.cfg.listener; l != nil {
		l.OnRestoreEnd(st)
	}
}

// installCache opens the cache file a full restore wrote, in place of the
// current one, and moves the overlay of own writes past next.
func (s *Store[V]) installCache(next map[int32]int64) error {
	db, err := openBolt(s.path, s.cfg.lockTimeout, false)
	if err != nil {
		return fmt.Errorf("open rebuilt cache file: %w", err)
	}
	if !s.opened { // in Open: nothing runs concurrently yet
		if s.db != nil {
			s.db.Close() // a delta attempt's file, replaced on disk
		}
		s.db = db
		return nil
	}
	s.mu.Lock()
	if s.closed { // Close gave up waiting for this rebuild
		s.mu.Unlock()
		db.Close()
		return ErrClosed
	}
	s.snaps.drop() // old.Close would wait for it
	old := s.db
	s.db = db
	for p, n := range next {
		s.reps.all[p].reset(n) // under s.mu: no Get sees the new file with old own writes missing
	}
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// reachedAll says whether every partition in pos (each one's position) is
// at or past its end once the batches bs are applied.
func reachedAll(pos map[int32]int64, bs []changelog.Batch, end map[int32]int64) bool {
	for p, n := range pos {
		for _, b := range bs {
			if b.Partition == p {
				n = max(n, b.Next)
			}
		}
		if n < end[p] {
			return false
		}
	}
	return true
}

// readUntil polls r, handing each poll's batches to apply, until every
// partition has reached end, and reports each applied batch to prog and the
// restore listener. It returns the positions reached.
func (s *Store[V]) readUntil(ctx context.Context, r *changelog.Reader, from, end map[int32]int64,
	prog *progress, apply func([]changelog.Batch) error,
) (pos map[int32]int64, records, nbytes int64, err error) {
	pos = make(map[int32]int64, len(from))
	pending := map[int32]bool{}
	for p := range s.info.Partitions {
		pos[p] = from[p]
		if from[p] < end[p] {
			pending[p] = true
		}
	}
	for len(pending) > 0 {
		pctx, cancel := context.WithTimeout(ctx, idleCheck)
		bs, err := r.Poll(pctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// Nothing arrived: the records left below end may all be
			// invisible (aborted, or compacted away). If the broker's end
			// has not moved, there is nothing more to wait for; the tail
			// reads whatever comes later.
			now, lerr := s.tp.EndOffsets(ctx)
			if lerr != nil {
				return nil, 0, 0, lerr
			}
			for p := range pending {
				if now[p] == end[p] {
					s.log.Debug("kvstore: partition has no visible records left before its end offset",
						"partition", p, "position", pos[p], "end", end[p])
					delete(pending, p)
				}
			}
			continue
		}
		if err != nil {
			return nil, 0, 0, err
		}
		if err := apply(bs); err != nil {
			return nil, 0, 0, err
		}
		var offs, recs int64
		for _, b := range bs {
			offs += b.Next - pos[b.Partition]
			recs += int64(len(b.Records))
			pos[b.Partition] = b.Next
			nbytes += int64(b.Bytes)
			if b.Next >= end[b.Partition] {
				delete(pending, b.Partition)
			}
			if l := s.cfg.listener; l != nil {
				l.OnBatchRestored(BatchRestored{Partition: b.Partition, Records: len(b.Records), Bytes: b.Bytes, Next: b.Next})
			}
		}
		records += recs
		prog.advance(offs, recs)
	}
	return pos, records, nbytes, nil
}

// bulkLoad writes the sorter's contents into a new cache file in key order,
// with the checkpoint next and every partition current as of currentAt, and
// moves it over the old one (installCache then opens it). The sorter lays
// the data pages out itself, in key order and packed full (what sorted
// bbolt Puts with FillPercent 1.0 produce, without their per-key cost);
// bbolt then adds the meta bucket as usual (see loadKeeping).
func (s *Store[V]) bulkLoad(srt *sorter, next map[int32]int64, currentAt time.Time) error {
	return s.loadKeeping(srt, nil, next, allAt(s.info.Partitions, currentAt))
}

// collectInto returns the apply step of a restore into srt: each poll's
// records through the poison screen and the misrouted-key check, into the
// sort, which adds them on its own goroutine while the next poll is read
// and screened (drain the sorter before reading it).
func (s *Store[V]) collectInto(ctx context.Context, srt *sorter) func([]changelog.Batch) error {
	return func(bs []changelog.Batch) error {
		bs, err := s.screen(ctx, bs) // poison.go
		if err != nil {
			return err
		}
		s.checkPartitions(bs) // partition.go
		return srt.addBatches(bs)
	}
}
