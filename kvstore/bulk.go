package kvstore

import (
	"log/slog"
	"math"

	"github.com/compactkv/compactkv/internal/extsort"
	"github.com/compactkv/compactkv/internal/pagewriter"
)

// sorter is what a full restore fills an empty cache file with: the
// external sort of the topic's records (internal/extsort: the last version
// of each key per partition, in (partition, key) order, spilling sorted runs
// beyond its memory limit) and the way its output becomes a bbolt file,
// one bucket per partition (internal/pagewriter: pages laid out by hand,
// checked, bbolt's API as the fallback).
type sorter struct {
	srt      *extsort.Sorter
	pageSize int          // of the bbolt file writeBolt writes; 0: os.Getpagesize()
	log      *slog.Logger // nil: slog.Default()
}

// newSorter returns a sorter holding about limit bytes in memory that spills
// runs named "<name>.restore-run-*.tmp" into dir.
func newSorter(limit int, dir, name string) *sorter {
	return &sorter{srt: extsort.New(limit, dir, name+runSuffix)}
}

// runSuffix ends the names of spilled runs; a restore killed midway leaves
// them behind and the next Open removes them.
const runSuffix = ".restore-run-*.tmp"

// add records one record; later adds of the same (partition, key) win, and
// a nil val deletes the key.
func (s *sorter) add(part int32, key, val []byte) error { return s.srt.Add(part, key, val) }

// cleanup removes the spilled runs and lets go of the memory; the sorter is
// of no further use. It is idempotent.
func (s *sorter) cleanup() { s.srt.Close() }

// writeBolt writes the sorter's live contents into a new bbolt file at path,
// one bucket per partition named bucket(p); partitions without live keys get
// no bucket. The page writer lays the pages out and checks them, or warns and
// loads through bbolt's API (see internal/pagewriter). The file is not
// synced; a bbolt transaction then writes everything else (the meta bucket).
// The sorter is cleaned up when it returns.
func (s *sorter) writeBolt(path string, bucket func(p int32) []byte) error {
	return s.writeBoltKeeping(path, bucket, nil, nil)
}

// writeBoltKeeping is writeBolt, with the buckets of the partitions keep (in
// ascending order, none of them in the sorter) copied in between the
// sorter's: copyKept(w, p) starts p's bucket, if it has keys, and puts them
// in key order. It may be called twice for a partition, should the page
// writer fall back to bbolt's API.
func (s *sorter) writeBoltKeeping(path string, bucket func(p int32) []byte, keep []int32, copyKept func(w pagewriter.Writer, p int32) error) error {
	defer s.cleanup()
	data := func(w pagewriter.Writer) error {
		k := 0
		copyBefore := func(part int64) error { // the kept partitions below part
			for ; k < len(keep) && int64(keep[k]) < part; k++ {
				if err := copyKept(w, keep[k]); err != nil {
					return err
				}
			}
			return nil
		}
		var cur int32
		started := false
		err := s.srt.Each(func(part int32, key, val []byte) error {
			if !started || part != cur {
				if err := copyBefore(int64(part)); err != nil {
					return err
				}
				if err := w.Bucket(bucket(part)); err != nil {
					return err
				}
				cur, started = part, true
			}
			return w.Put(key, val)
		})
		if err != nil {
			return err
		}
		return copyBefore(math.MaxInt64)
	}
	return pagewriter.Write(path, data, pagewriter.Options{PageSize: s.pageSize, Logger: s.log})
}
