package kvstore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/internal/pagewriter"
)

// errStaleRefill is a partition rebuild's end when the partition was given
// up, or given up and taken on again, while it ran: it swapped nothing in.
var errStaleRefill = errors.New("kvstore: partition given up during its rebuild")

// rebuildPartition rebuilds partition p's bucket from the start of the
// topic, when guard says it cannot be trusted (the records the follower
// would read next in p are gone, or p has been behind for longer than
// delete.retention.ms), and touches no other partition: their buckets and
// checkpoints stay as they are. It returns the offset p's follower carries
// on from.
func (s *Store[V]) rebuildPartition(ctx context.Context, p int32, guard Guard, reason string, still func() bool) (int64, error) {
	began := time.Now()
	lctx, cancel := context.WithTimeout(ctx, probeTimeout)
	lo, err := s.listOffsets(lctx)
	cancel()
	if err != nil {
		return 0, err
	}
	next, records, nbytes, err := s.refillPartition(ctx, p, lo, guard, reason, still)
	if err != nil {
		return 0, err
	}
	st := RestoreStats{Mode: "partition", Reason: reason, Guard: guard, Records: records, Bytes: nbytes,
		Duration: time.Since(began), Partitions: s.info.Partitions}
	s.publishRestore(st)
	return next, nil
}

// refillPartition refills partition p's bucket from the topic as lo lists
// it, because guard said the bucket cannot be trusted, and returns the
// checkpoint it reached and what it read. The partition's records go
// through the poison screen into the external sort, and one bbolt
// transaction swaps the bucket, so reads see the old contents until it
// commits. No other partition is touched.
//
// still, if not nil, says whether the partition is still taken on as it was
// when the rebuild began (partitioned mode); if not, nothing is swapped in
// and the error is errStaleRefill.
func (s *Store[V]) refillPartition(ctx context.Context, p int32, lo listed, guard Guard, reason string, still func() bool) (next, records, nbytes int64, err error) {
	s.guards[guard].Add(1)
	s.logRefused(guard, "kvstore: a partition cannot be trusted, rebuilding that partition from the topic",
		"kvstore: restoring a partition this cache never held from the topic",
		"partition", p, "guard", guard.String(), "reason", reason)
	s.reps.rebuilding(p)
	from, end := map[int32]int64{p: lo.start[p]}, map[int32]int64{p: lo.end[p]}
	if l := s.cfg.listener; l != nil {
		l.OnRestoreStart(RestoreStart{Mode: "partition", Reason: reason, Guard: guard,
			Partitions: []PartitionRange{{Partition: p, Start: from[p], End: end[p]}}})
	}
	r, err := s.tp.NewReader(from)
	if err != nil {
		return 0, 0, 0, err
	}
	srt := newSorter(s.cfg.restoreMemory, s.cfg.dir, s.topic)
	srt.log = s.log
	defer srt.cleanup()
	reached, records, nbytes, err := s.readUntil(ctx, r, from, end,
		newProgress(s.log, s.cfg.progressEvery, end[p]-from[p]), s.collectInto(ctx, srt))
	if err == nil {
		err = srt.drain()
	}
	go r.Close()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("kvstore: rebuild partition %d of %q: %w", p, s.topic, err)
	}
	next = reached[p]
	rep := s.reps.all[p]
	rep.handover.Lock()
	defer rep.handover.Unlock()
	if still != nil && !still() {
		return 0, 0, 0, errStaleRefill
	}
	err = s.updateCache(func(tx *bolt.Tx) error {
		if tx.Bucket(rep.bucket) != nil {
			if err := tx.DeleteBucket(rep.bucket); err != nil {
				return err
			}
		}
		b, err := tx.CreateBucket(rep.bucket)
		if err != nil {
			return err
		}
		b.FillPercent = 1.0 // keys come in order
		err = srt.srt.Each(func(part int32, key, val []byte) error {
			if part != p {
				return nil
			}
			// bbolt keeps what Put is given until the commit; the sorter reuses its buffers.
			return b.Put(bytes.Clone(key), bytes.Clone(val))
		})
		if err != nil {
			return err
		}
		if err := putOffsets(tx, map[int32]int64{p: next}); err != nil {
			return err
		}
		return putCurrent(tx, map[int32]time.Time{p: lo.at})
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("kvstore: rebuild partition %d of %q: write the cache file: %w", p, s.topic, err)
	}
	rep.reset(next)
	s.reps.restored(p, next, end[p], lo.at)
	s.reps.update(p, func(r *replica) {
		if r.state == PartitionRestoring && r.warm { // else a standby made owner meanwhile: see restored
			r.state = PartitionFollowing
		}
	})
	s.log.Info("kvstore: partition rebuilt", "partition", p, "records", records)
	return next, records, nbytes, nil
}

// restoreTogether restores the partitions gs, each refused by the guard it
// names, together, as a full restore does: one read of just those
// partitions, through the poison screen into the external sort, and the
// page writer laying out a new cache file that replaces the current one.
// The new file also holds a copy of every other partition followed, and of
// every other one whose bucket can still serve as the base of a delta
// (partitionVerdict): its keys, its checkpoint and the time it was last
// current. The others, refused anyway should they be given, start over as
// in a new file (empty, checkpoint 0, never current).
//
// Refilling them one by one instead (refillPartition) reads each partition
// on its own and puts every key through bbolt's API: for a member starting
// with an empty cache, most of its restore. This is for when nothing else
// writes the file: the follower runs it on its own goroutine (the
// partitions it follows wait, their checkpoints in the file matching what
// their buckets hold), and applyView picks it only while no refill runs
// (restoreSplit). A restore killed midway leaves the current file as it was,
// and the next Open removes what it left; the new file replaces it in one
// rename, its checkpoints and times those of what it holds.
//
// It returns where each of the partitions it restored carries on; one given
// up (or given up and taken on again) meanwhile is not among them, its
// bucket in the file as restored but not served.
func (s *Store[V]) restoreTogether(ctx context.Context, gs []partGuard) (map[int32]int64, error) {
	began := time.Now()
	lctx, cancel := context.WithTimeout(ctx, probeTimeout)
	lo, err := s.listOffsets(lctx)
	cancel()
	if err != nil {
		return nil, err
	}
	m, err := readMeta(s.db)
	if err != nil {
		return nil, fmt.Errorf("kvstore: read the cache file's checkpoints: %w", err)
	}
	in := make(map[int32]bool, len(gs))
	still := make(map[int32]func() bool, len(gs))
	from, end := map[int32]int64{}, map[int32]int64{}
	ranges := make([]PartitionRange, 0, len(gs))
	var total int64
	for _, g := range gs {
		in[g.p], still[g.p] = true, s.reps.still(g.p)
		from[g.p], end[g.p] = lo.start[g.p], lo.end[g.p]
		ranges = append(ranges, PartitionRange{Partition: g.p, Start: from[g.p], End: end[g.p]})
		total += max(0, end[g.p]-from[g.p])
		s.reps.rebuilding(g.p)
	}
	slices.SortFunc(ranges, func(a, b PartitionRange) int { return cmp.Compare(a.Partition, b.Partition) })
	var keep []int32
	next, current := map[int32]int64{}, map[int32]time.Time{}
	for p := range s.info.Partitions {
		switch {
		case in[p]:
		case s.reps.followed(p) || partitionVerdict(m, p, s.info, lo.start, lo.end, began) == nil:
			keep = append(keep, p)
			next[p] = m.next[p]
			if at, ok := m.current[p]; ok { // else never current: refused should it be given
				current[p] = at
			}
		default:
			next[p] = 0
		}
	}
	s.logRefused(gs[0].guard, "kvstore: partitions cannot be trusted, restoring them together from the topic",
		"kvstore: restoring partitions this cache never held together from the topic",
		"partitions", len(gs), "guard", gs[0].guard.String(), "reason", gs[0].reason, "kept", len(keep))
	if l := s.cfg.listener; l != nil {
		l.OnRestoreStart(RestoreStart{Mode: "partition", Reason: gs[0].reason, Guard: gs[0].guard, Partitions: ranges})
	}
	r, err := s.tp.NewReader(from)
	if err != nil {
		return nil, err
	}
	srt := newSorter(s.cfg.restoreMemory, s.cfg.dir, s.topic)
	srt.log = s.log
	defer srt.cleanup()
	reached, records, nbytes, err := s.readUntil(ctx, r, from, end,
		newProgress(s.log, s.cfg.progressEvery, total), s.collectInto(ctx, srt))
	go r.Close()
	if err != nil {
		return nil, fmt.Errorf("kvstore: restore partitions of %q: %w", s.topic, err)
	}
	for p := range in {
		next[p], current[p] = reached[p], lo.at
	}
	if err := s.loadKeeping(srt, keep, next, current); err != nil {
		return nil, fmt.Errorf("kvstore: restore partitions of %q: %w", s.topic, err)
	}

	// The new file goes in under the partitions' handover locks, as a
	// refill's bucket does; those still taken on as they were are served
	// from it.
	out := make(map[int32]int64, len(in))
	for _, g := range gs {
		rep := s.reps.all[g.p]
		rep.handover.Lock()
		defer rep.handover.Unlock()
		if still[g.p]() {
			out[g.p] = next[g.p]
		}
	}
	if err := s.installCache(out); err != nil {
		return nil, fmt.Errorf("kvstore: restore partitions of %q: %w", s.topic, err)
	}
	for _, g := range gs { // counted once done: a pass that fails falls back on refills, which count them
		s.guards[g.guard].Add(1)
	}
	st := RestoreStats{Mode: "partition", Reason: gs[0].reason, Guard: gs[0].guard, Records: records, Bytes: nbytes,
		Duration: time.Since(began), Partitions: s.info.Partitions}
	s.log.Info("kvstore: partitions restored together", "partitions", len(gs), "records", records, "bytes", nbytes,
		"kept", len(keep), "duration", st.Duration)
	s.publishRestore(st) // before they are served: Stats says what restored them by then
	for p, n := range out {
		s.reps.restored(p, n, end[p], lo.at)
		s.reps.update(p, func(r *replica) {
			if r.state == PartitionRestoring && r.warm { // else a standby made owner meanwhile: see restored
				r.state = PartitionFollowing
			}
		})
	}
	return out, nil
}

// loadKeeping writes the sorter's contents and the kept partitions' buckets
// (copied from the current file) into a new cache file, with the
// checkpoints next and the times current, and moves it over the current
// one; installCache then opens it.
func (s *Store[V]) loadKeeping(srt *sorter, keep []int32, next map[int32]int64, current map[int32]time.Time) error {
	tmp := s.path + ".restore"
	_ = os.Remove(tmp)
	bucket := func(p int32) []byte { return s.reps.all[p].bucket }
	if err := srt.writeBoltKeeping(tmp, bucket, keep, s.copyBucket); err != nil {
		os.Remove(tmp)
		if errors.Is(err, errDamaged) { // met copying a kept bucket
			s.damaged.Store(true)
		}
		return fmt.Errorf("load cache: %w", err)
	}
	db, err := openBolt(tmp, s.cfg.lockTimeout, true)
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("open loaded cache file: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := writeMeta(tx, s.topic, s.info.ID, s.info.Partitions, next, time.Time{}); err != nil {
			return err
		}
		return putCurrent(tx, current)
	})
	if err == nil {
		err = db.Sync()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write cache file: %w", err)
	}
	if err := replaceFile(tmp, s.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install cache file: %w", err)
	}
	return nil
}

// copyBucket hands partition p's bucket in the current file to w, in key
// order; nothing if it has no keys.
func (s *Store[V]) copyBucket(w pagewriter.Writer, p int32) error {
	name := s.reps.all[p].bucket
	return safeView(s.db, func(tx *bolt.Tx) error {
		b := tx.Bucket(name)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.First()
		if k == nil {
			return nil
		}
		if err := w.Bucket(name); err != nil {
			return err
		}
		var last []byte
		for ; k != nil; k, v = c.Next() {
			if v == nil { // a nested bucket: the cache's layout has none
				continue
			}
			// A damaged leaf bbolt reads without a panic can hand keys out
			// of order; copied, they would pass into a well-formed file.
			if last != nil && bytes.Compare(k, last) <= 0 {
				return fmt.Errorf("%w: partition %d's bucket holds keys out of order", errDamaged, p)
			}
			if err := w.Put(k, v); err != nil {
				return err
			}
			last = append(last[:0], k...)
		}
		return nil
	})
}

// logRefused logs a restore of partitions the guards refused: warn as a
// warning, or fresh as information when guard is GuardNoCache (there was
// nothing to trust, a partition this member never held, not a cache gone
// bad).
func (s *Store[V]) logRefused(guard Guard, warn, fresh string, args ...any) {
	if guard == GuardNoCache {
		s.log.Info(fresh, args...)
		return
	}
	s.log.Warn(warn, args...)
}
