package kvstore

import (
	"log/slog"

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
	defer s.cleanup()
	data := func(w pagewriter.Writer) error {
		var cur int32
		started := false
		return s.srt.Each(func(part int32, key, val []byte) error {
			if !started || part != cur {
				if err := w.Bucket(bucket(part)); err != nil {
					return err
				}
				cur, started = part, true
			}
			return w.Put(key, val)
		})
	}
	return pagewriter.Write(path, data, pagewriter.Options{PageSize: s.pageSize, Logger: s.log})
}
