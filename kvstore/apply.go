package kvstore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
)

// applyBatches applies one poll's batches to the cache file in one
// transaction together with the offsets they bring each partition to.
func (s *Store[V]) applyBatches(ctx context.Context, bs []changelog.Batch) error {
	return s.applyBatchesWith(ctx, bs, nil, nil)
}

// applyBatchesWith is applyBatches that also writes own, in the same
// transaction after the batches (own writes the batches should have carried
// but did not, see applyTail), and records that each partition in current
// was current at its time.
func (s *Store[V]) applyBatchesWith(ctx context.Context, bs []changelog.Batch, own map[int32][]ownWrite, current map[int32]time.Time) error {
	if len(bs) == 0 {
		return nil
	}
	bs, err := s.screen(ctx, bs) // poison.go
	if err != nil {
		return err
	}
	s.checkPartitions(bs) // partition.go
	return s.updateCache(func(tx *bolt.Tx) error {
		next := make(map[int32]int64, len(bs))
		for _, bt := range bs {
			next[bt.Partition] = bt.Next
			if len(bt.Records) == 0 {
				continue
			}
			b := tx.Bucket(s.reps.all[bt.Partition].bucket)
			if b == nil {
				return fmt.Errorf("cache has no bucket for partition %d", bt.Partition)
			}
			recs := bt.Records
			if len(recs) > 1 {
				recs = slices.Clone(recs)
				// Key order for locality; stable, so the last version of a key is applied last.
				slices.SortStableFunc(recs, func(a, b changelog.Record) int { return bytes.Compare(a.Key, b.Key) })
			}
			for _, r := range recs {
				var err error
				if r.Value == nil {
					err = b.Delete(r.Key)
				} else {
					err = b.Put(r.Key, r.Value)
				}
				if err != nil {
					return fmt.Errorf("kvstore: write partition %d offset %d of topic %q to the cache file: %w",
						bt.Partition, r.Offset, s.topic, err)
				}
			}
		}
		for p, ws := range own {
			if err := writeOwn(tx, s.reps.all[p], ws); err != nil {
				return err
			}
		}
		if err := putOffsets(tx, next); err != nil {
			return err
		}
		return putCurrent(tx, current)
	})
}

// writeOwn writes r's own writes ws into the cache file inside tx.
func writeOwn(tx *bolt.Tx, r *replica, ws []ownWrite) error {
	b := tx.Bucket(r.bucket)
	if b == nil {
		return fmt.Errorf("cache has no bucket for partition %d", r.p)
	}
	for _, w := range ws {
		var err error
		if w.value == nil {
			err = b.Delete([]byte(w.key))
		} else {
			err = b.Put([]byte(w.key), w.value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
