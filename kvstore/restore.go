package kvstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
)

const (
	// lockTimeout bounds the wait for a cache file another process holds.
	lockTimeout = 5 * time.Second
	// idleCheck is how long a restore waits for records of a partition that
	// has not reached its end offset before asking the broker again.
	idleCheck = 3 * time.Second
	// loadTxRecords is how many records one bulk-load transaction inserts.
	loadTxRecords = 200_000
)

// restoreCache brings the cache file up to the topic's current end offsets,
// either from its checkpoint (delta) or by rebuilding it (full), and returns
// the open reader positioned where the cache ends so that the tail carries on
// from there.
func (s *Store[V]) restoreCache(ctx context.Context) (*changelog.Reader, error) {
	began := time.Now()
	start, end, err := changelog.Offsets(ctx, s.adm, s.topic)
	if err != nil {
		return nil, fmt.Errorf("kvstore: open %q: %w", s.topic, err)
	}

	reason, next, err := s.openExisting(start, end)
	if err != nil {
		return nil, err
	}
	mode := "delta"
	if reason != "" {
		mode = "full"
		next = start
		s.log.Info("kvstore: full restore", "reason", reason)
	}

	r, err := changelog.NewReader(s.topic, next, s.readerOpts()...)
	if err != nil {
		return nil, err
	}
	var records, nbytes int64
	if mode == "full" {
		srt := newSorter(s.cfg.restoreMemory, s.cfg.dir)
		defer srt.cleanup()
		next, records, nbytes, err = s.readUntil(ctx, r, next, end, func(bs []changelog.Batch) error {
			for _, b := range bs {
				for _, rec := range b.Records {
					if err := srt.add(b.Partition, rec.Key, rec.Value); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err == nil {
			err = s.bulkLoad(srt, next)
		}
	} else {
		next, records, nbytes, err = s.readUntil(ctx, r, next, end, s.applyBatches)
		if err == nil {
			err = s.db.Sync()
			s.db.NoSync = false
		}
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("kvstore: restore %q: %w", s.topic, err)
	}
	s.restore = RestoreStats{Mode: mode, Reason: reason, Records: records, Bytes: nbytes,
		Duration: time.Since(began), Partitions: s.info.Partitions}
	s.ov = newOverlay(s.info.Partitions, next)
	s.log.Info("kvstore: restored", "mode", mode, "records", records, "bytes", nbytes,
		"duration", s.restore.Duration)
	return r, nil
}

// openExisting opens the cache file if there is one and says why it cannot
// be brought up to date from its checkpoint ("" if it can), with the
// checkpoint itself.
func (s *Store[V]) openExisting(start, end map[int32]int64) (string, map[int32]int64, error) {
	if _, err := os.Stat(s.path); errors.Is(err, os.ErrNotExist) {
		return "no cache", nil, nil
	}
	db, err := openBolt(s.path, lockTimeout, true)
	if errors.Is(err, bolt.ErrTimeout) {
		return "", nil, fmt.Errorf("kvstore: cache file %s is locked by another process (waited %v)", s.path, lockTimeout)
	}
	if err != nil {
		s.log.Warn("kvstore: cache file unreadable, rebuilding it", "path", s.path, "err", err)
		return "cache file unreadable: " + err.Error(), nil, s.discardCache()
	}
	m, err := readMeta(db)
	reason := s.staleReason(m, err, start, end)
	if reason != "" {
		db.Close()
		return reason, nil, s.discardCache()
	}
	s.db = db
	return "", m.next, nil
}

// staleReason says why a cache with meta m cannot be trusted as a base for a
// delta restore, or "" if it can.
func (s *Store[V]) staleReason(m cacheMeta, err error, start, end map[int32]int64) string {
	switch {
	case err != nil:
		return "no checkpoint in cache"
	case m.format != formatVersion:
		return fmt.Sprintf("cache format version %d, want %d", m.format, formatVersion)
	case m.topic != s.topic:
		return fmt.Sprintf("cache is of topic %q", m.topic)
	case m.topicID != s.info.ID:
		return "topic ID changed (topic deleted and recreated)"
	case m.partitions != s.info.Partitions:
		return fmt.Sprintf("partition count changed from %d to %d", m.partitions, s.info.Partitions)
	}
	if off := time.Since(m.currentAt); off > s.info.DeleteRetention {
		return fmt.Sprintf("cache last current %v ago, longer than delete.retention.ms (%v): deleted keys could come back",
			off.Round(time.Second), s.info.DeleteRetention)
	}
	for p := range s.info.Partitions {
		n, ok := m.next[p]
		switch {
		case !ok:
			return fmt.Sprintf("no checkpoint for partition %d", p)
		case n < start[p]:
			return fmt.Sprintf("checkpoint %d of partition %d is below the log start offset %d", n, p, start[p])
		case n > end[p]:
			return fmt.Sprintf("checkpoint %d of partition %d is above the end offset %d", n, p, end[p])
		}
	}
	return ""
}

// discardCache removes the cache file so that it is rebuilt.
func (s *Store[V]) discardCache() error {
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kvstore: remove stale cache %s: %w", s.path, err)
	}
	return nil
}

// readUntil polls r, handing each poll's batches to apply, until every
// partition has reached end. It returns the positions reached.
func (s *Store[V]) readUntil(ctx context.Context, r *changelog.Reader, from, end map[int32]int64,
	apply func([]changelog.Batch) error,
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
			_, now, lerr := changelog.Offsets(ctx, s.adm, s.topic)
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
		for _, b := range bs {
			pos[b.Partition] = b.Next
			records += int64(len(b.Records))
			nbytes += int64(b.Bytes)
			if b.Next >= end[b.Partition] {
				delete(pending, b.Partition)
			}
		}
	}
	return pos, records, nbytes, nil
}

// bulkLoad writes the sorter's contents into a new cache file in key order,
// with the checkpoint next, and moves it over the old one.
func (s *Store[V]) bulkLoad(srt *sorter, next map[int32]int64) error {
	tmp := s.path + ".restore"
	_ = os.Remove(tmp)
	db, err := openBolt(tmp, lockTimeout, true)
	if err != nil {
		return fmt.Errorf("create cache file: %w", err)
	}
	defer func() {
		if db != nil {
			db.Close()
			os.Remove(tmp)
		}
	}()

	var (
		tx    *bolt.Tx
		b     *bolt.Bucket
		cur   int32 = -1
		n     int
		arena = make([]byte, 0, 16<<20) // on growth, slices into the old array stay valid
	)
	commit := func() error {
		if tx == nil {
			return nil
		}
		err := tx.Commit()
		tx, arena = nil, arena[:0]
		return err
	}
	err = srt.each(func(part int32, key, val []byte) error {
		if tx == nil || n >= loadTxRecords || part != cur {
			if err := commit(); err != nil {
				return err
			}
			var err error
			if tx, err = db.Begin(true); err != nil {
				return err
			}
			if b, err = tx.CreateBucketIfNotExists(s.buckets[part]); err != nil {
				return err
			}
			b.FillPercent = 1.0 // keys arrive in order: pack pages full
			cur, n = part, 0
		}
		// bbolt keeps key and value until commit; the sorter reuses its buffers.
		start := len(arena)
		arena = append(arena, key...)
		arena = append(arena, val...)
		k := arena[start : start+len(key) : start+len(key)]
		v := arena[start+len(key) : len(arena) : len(arena)]
		n++
		return b.Put(k, v)
	})
	if err == nil {
		err = commit()
	} else if tx != nil {
		tx.Rollback()
	}
	if err != nil {
		return fmt.Errorf("load cache: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return writeMeta(tx, s.topic, s.info.ID, s.info.Partitions, next, time.Now())
	})
	if err == nil {
		err = db.Sync()
	}
	if err == nil {
		err = db.Close()
	}
	db = nil
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write cache file: %w", err)
	}
	if err := replaceFile(tmp, s.path); err != nil {
		return fmt.Errorf("install cache file: %w", err)
	}
	s.db, err = openBolt(s.path, lockTimeout, false)
	if err != nil {
		return fmt.Errorf("open cache file: %w", err)
	}
	return nil
}

// applyBatches applies one poll's batches to the cache file in one
// transaction together with the offsets they bring each partition to.
func (s *Store[V]) applyBatches(bs []changelog.Batch) error {
	if len(bs) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		next := make(map[int32]int64, len(bs))
		for _, bt := range bs {
			next[bt.Partition] = bt.Next
			if len(bt.Records) == 0 {
				continue
			}
			b := tx.Bucket(s.buckets[bt.Partition])
			if b == nil {
				return fmt.Errorf("cache has no bucket for partition %d", bt.Partition)
			}
			recs := bt.Records
			if len(recs) > 1 {
				recs = slices.Clone(recs)
				// Key order for locality; stable, so the last version of a key is applied last.
				slices.SortStableFunc(recs, func(a, b *kgo.Record) int { return bytes.Compare(a.Key, b.Key) })
			}
			for _, r := range recs {
				var err error
				if r.Value == nil {
					err = b.Delete(r.Key)
				} else {
					err = b.Put(r.Key, r.Value)
				}
				if err != nil {
					return &changelog.PartitionError{Topic: s.topic, Partition: bt.Partition, Offset: r.Offset, Err: err}
				}
			}
		}
		if err := putOffsets(tx, next); err != nil {
			return err
		}
		return putCurrentAt(tx, time.Now())
	})
}

// tail applies what other writers (and this store) write, until ctx ends.
func (s *Store[V]) tail(ctx context.Context, r *changelog.Reader) {
	defer close(s.tailDone)
	defer r.Close()
	for {
		bs, err := r.Poll(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = s.applyTail(bs)
		}
		if err != nil {
			s.tailMu.Lock()
			s.tailErr = err
			s.tailMu.Unlock()
			s.log.Error("kvstore: following the topic stopped", "err", err)
			return
		}
	}
}

// applyTail applies batches and advances the overlay past them.
func (s *Store[V]) applyTail(bs []changelog.Batch) error {
	if len(bs) == 0 {
		return nil
	}
	held := s.ov.n.Load() > 0
	if held {
		s.ov.mu.Lock()
		defer s.ov.mu.Unlock()
	}
	if err := s.applyBatches(bs); err != nil {
		return err
	}
	if !held {
		s.ov.mu.Lock()
		defer s.ov.mu.Unlock()
	}
	for _, b := range bs {
		s.ov.advanceLocked(b.Partition, b.Next)
	}
	return nil
}

// TailErr returns the error that stopped the store following its topic, or
// nil while it follows. After such an error Get serves the cache as it was.
func (s *Store[V]) TailErr() error {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	return s.tailErr
}
