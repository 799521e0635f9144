package kvstore

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
)

// rebuildPartition rebuilds partition p's bucket from the start of the
// topic, when the records the follower would read next in p are gone (a
// gap), and touches no other partition: their buckets, checkpoints and
// readers' positions stay as they are. The partition's records go through
// the poison screen into the external sort, and one bbolt transaction
// swaps the bucket, so reads see the old contents until it commits. It
// returns a reader positioned at pos, with p moved to where the rebuild
// ended.
func (s *Store[V]) rebuildPartition(ctx context.Context, p int32, pos map[int32]int64, reason string) (*changelog.Reader, map[int32]int64, error) {
	began := time.Now()
	lctx, cancel := context.WithTimeout(ctx, probeTimeout)
	lo, err := s.listOffsets(lctx)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	s.guards[GuardBelowLogStart].Add(1)
	s.log.Warn("kvstore: records of a partition are gone, rebuilding that partition from the topic",
		"partition", p, "reason", reason)
	s.reps.update(p, func(r *replica) {
		if r.state != PartitionStopped {
			r.state, r.err = PartitionRestoring, nil
		}
	})
	from, end := map[int32]int64{p: lo.start[p]}, map[int32]int64{p: lo.end[p]}
	if l := s.cfg.listener; l != nil {
		l.OnRestoreStart(RestoreStart{Mode: "partition", Reason: reason, Guard: GuardBelowLogStart,
			Partitions: []PartitionRange{{Partition: p, Start: from[p], End: end[p]}}})
	}
	r, err := s.tp.NewReader(from)
	if err != nil {
		return nil, nil, err
	}
	srt := newSorter(s.cfg.restoreMemory, s.cfg.dir, s.topic)
	srt.log = s.log
	defer srt.cleanup()
	next, records, nbytes, err := s.readUntil(ctx, r, from, end, newProgress(s.log, s.cfg.progressEvery, end[p]-from[p]),
		func(bs []changelog.Batch) error {
			bs, err := s.screen(ctx, bs) // poison.go
			if err != nil {
				return err
			}
			s.checkPartitions(bs) // partition.go
			for _, b := range bs {
				for _, rec := range b.Records {
					if err := srt.add(b.Partition, rec.Key, rec.Value); err != nil {
						return err
					}
				}
			}
			return nil
		})
	go r.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("kvstore: rebuild partition %d of %q: %w", p, s.topic, err)
	}
	rep := s.reps.all[p]
	err = safeUpdate(s.db, func(tx *bolt.Tx) error {
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
				return nil // a record of another partition that sat in p (misrouted) is p's
			}
			// bbolt keeps what Put is given until the commit; the sorter reuses its buffers.
			return b.Put(bytes.Clone(key), bytes.Clone(val))
		})
		if err != nil {
			return err
		}
		return putOffsets(tx, map[int32]int64{p: next[p]})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("kvstore: rebuild partition %d of %q: write the cache file: %w", p, s.topic, err)
	}
	rep.reset(next[p])
	s.reps.restored(p, next[p], end[p], lo.at)
	s.reps.update(p, func(r *replica) {
		if r.state == PartitionRestoring {
			r.state = PartitionFollowing
		}
	})
	st := RestoreStats{Mode: "partition", Reason: reason, Guard: GuardBelowLogStart, Records: records, Bytes: nbytes,
		Duration: time.Since(began), Partitions: s.info.Partitions}
	s.statsMu.Lock()
	s.restore = st
	s.statsMu.Unlock()
	s.log.Info("kvstore: partition rebuilt", "partition", p, "records", records, "duration", st.Duration)
	if l := s.cfg.listener; l != nil {
		l.OnRestoreEnd(st)
	}
	pos[p] = next[p]
	nr, err := s.tp.NewReader(pos)
	if err != nil {
		return nil, nil, err
	}
	return nr, pos, nil
}
