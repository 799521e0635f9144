package kvstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
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
	s.log.Warn("kvstore: a partition cannot be trusted, rebuilding that partition from the topic",
		"partition", p, "guard", guard.String(), "reason", reason)
	s.reps.update(p, func(r *replica) {
		if r.state != PartitionStopped {
			r.state, r.err = PartitionRestoring, nil
		}
	})
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
		if r.state == PartitionRestoring {
			r.state = PartitionFollowing
		}
	})
	s.log.Info("kvstore: partition rebuilt", "partition", p, "records", records)
	return next, records, nbytes, nil
}
