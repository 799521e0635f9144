package kvstore

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"maps"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Entry is one key and its value, as Scan yields them.
type Entry[V any] struct {
	Key   string // the entry's key
	Value V      // its value, decoded
}

// ScanOption configures Scan.
type ScanOption interface{ applyScan(*scanConfig) }

type scanConfig struct{ after string }

type scanOptFn func(*scanConfig)

func (f scanOptFn) applyScan(c *scanConfig) { f(c) }

// After starts a Scan after key (exclusive), for cursor pagination.
// Default: from the first key with the prefix.
func After(key string) ScanOption { return scanOptFn(func(c *scanConfig) { c.after = key }) }

const scanPage = 256

// Scan yields the entries whose keys start with prefix, in byte order of
// keys. Values are decoded copies; nothing is held across iterations, so the
// loop body may call any method of the store. The scan reads the cache a page
// at a time: writes made during the scan may or may not be seen. An error (a
// value that does not decode, ctx ended, store closed) is yielded once with a
// zero Entry and ends the scan. In partitioned mode (Group) it yields the
// keys of the partitions this member owns only (merge the owners' scans for
// the whole topic), and fails with ErrNotServed while one of them is still
// restoring.
func (s *Store[V]) Scan(ctx context.Context, prefix string, opts ...ScanOption) iter.Seq2[Entry[V], error] {
	var sc scanConfig
	for _, o := range opts {
		o.applyScan(&sc)
	}
	return func(yield func(Entry[V], error) bool) {
		after := sc.after
		parts, err := s.scannable()
		if err != nil {
			yield(Entry[V]{}, err)
			return
		}
		for {
			if err := ctx.Err(); err != nil {
				yield(Entry[V]{}, err)
				return
			}
			page, next, more, err := s.scanPage(parts, prefix, after)
			if err != nil {
				yield(Entry[V]{}, err)
				return
			}
			for _, kv := range page {
				var v V
				if err := s.codec.Decode(ctx, kv.value, &v); err != nil {
					yield(Entry[V]{}, fmt.Errorf("kvstore: scan %q: %w", kv.key, err))
					return
				}
				if !yield(Entry[V]{Key: kv.key, Value: v}, nil) {
					return
				}
			}
			after = next
			if !more {
				return
			}
		}
	}
}

// scannable returns the partitions a scan reads: every partition in global
// mode; in partitioned mode the owned ones, or an error wrapping
// ErrNotServed while one of them is still restoring (a scan would miss its
// keys).
func (s *Store[V]) scannable() ([]int32, error) {
	var out []int32
	for p, r := range s.reps.all {
		r.mu.RLock()
		role, warm := r.role, r.warm
		r.mu.RUnlock()
		switch {
		case role != RoleOwner:
		case !warm && s.grp != nil:
			return nil, fmt.Errorf("%w: scan: partition %d is still restoring here", ErrNotServed, p)
		default:
			out = append(out, int32(p))
		}
	}
	return out, nil
}

type rawKV struct {
	key   string
	value []byte
}

// scanPage returns the live entries among the first scanPage keys with prefix
// after after, in key order, merging every partition with the overlay; next
// is the last key it considered (live or hidden by a delete) and more says
// whether keys may follow it.
func (s *Store[V]) scanPage(parts []int32, prefix, after string) (page []rawKV, next string, more bool, err error) {
	if s.closing.Load() {
		return nil, "", false, ErrClosed
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, "", false, ErrClosed
	}
	if now, err := s.scannable(); err != nil || !slices.Equal(now, parts) {
		if err == nil { // a rebalance moved a partition mid-scan: the rest would miss its keys
			err = fmt.Errorf("%w: scan: the partitions served here changed during the scan", ErrNotServed)
		}
		return nil, "", false, err
	}
	// The overlay first, then the file: the tail commits to the file before
	// it drops overlay entries, so nothing falls between the two reads.
	own := map[string]ovEntry{}
	for _, p := range parts {
		s.reps.all[p].ownWithPrefix(prefix, after, own)
	}
	merged := map[string][]byte{}
	err = safeView(s.db, func(tx *bolt.Tx) error {
		start := max(prefix, after)
		for _, p := range parts {
			b := tx.Bucket(s.reps.all[p].bucket)
			if b == nil {
				continue
			}
			c := b.Cursor()
			n := 0
			for k, v := c.Seek([]byte(start)); k != nil && bytes.HasPrefix(k, []byte(prefix)) && n < scanPage; k, v = c.Next() {
				if string(k) <= after {
					continue
				}
				ks := string(k)
				if _, dup := merged[ks]; !dup || s.part(k, s.info.Partitions) == p {
					merged[ks] = bytes.Clone(v)
				}
				n++
			}
		}
		return nil
	})
	if err != nil {
		s.noteDamage(err)
		return nil, "", false, fmt.Errorf("kvstore: read cache: %w", err)
	}
	for k, e := range own {
		merged[k] = e.value // nil hides the key
	}
	keys := slices.Sorted(maps.Keys(merged))
	if len(keys) > scanPage {
		keys, more = keys[:scanPage], true
	} else {
		more = len(keys) == scanPage
	}
	for _, k := range keys {
		if v := merged[k]; v != nil {
			page = append(page, rawKV{k, v})
		}
	}
	if len(keys) > 0 {
		next = keys[len(keys)-1]
	}
	return page, next, more, nil
}
