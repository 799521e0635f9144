package kvstore

import (
	"log/slog"
	"math"

	"github.com/compactkv/compactkv/changelog"
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

	// The goroutine that adds what addBatches hands it, started by the
	// first addBatches, so that sorting and spilling overlap the next
	// polls and their screening.
	feed chan []changelog.Batch // nil until the first addBatches
	fed  chan struct{}          // closed when the goroutine has ended
	ferr error                  // the goroutine's error; read after fed is closed
}

// feedDepth is how many polls' batches addBatches queues while the sorting
// goroutine is busy: none, so a restore holds at most the poll being sorted
// and the one being screened (each a fetch's bytes, one fetch per broker,
// and more for a record batch larger than a fetch: see changelog's reader),
// besides the sort's RestoreMemory.
const feedDepth = 0

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

// addBatches hands every record of bs to the sorter, as add does, on the
// sorter's goroutine: it returns once bs is queued, and reports an error
// of an earlier add (the sorter is then unusable). bs must not change
// afterwards. Call drain before reading the sorter.
func (s *sorter) addBatches(bs []changelog.Batch) error {
	if s.feed == nil {
		s.feed, s.fed = make(chan []changelog.Batch, feedDepth), make(chan struct{})
		go s.run()
	}
	select {
	case <-s.fed:
		return s.ferr
	case s.feed <- bs:
		return nil
	}
}

func (s *sorter) run() {
	defer close(s.fed)
	for bs := range s.feed {
		for _, b := range bs {
			for _, rec := range b.Records {
				if err := s.srt.Add(b.Partition, rec.Key, rec.Value); err != nil {
					s.ferr = err
					return
				}
			}
		}
	}
}

// drain waits until everything addBatches queued is in the sorter and
// returns the first error adding it met. It ends the sorter's goroutine:
// addBatches must not be called after it.
func (s *sorter) drain() error {
	if s.feed == nil {
		return nil
	}
	select {
	case <-s.fed:
	default:
		close(s.feed)
		<-s.fed
	}
	return s.ferr
}

// cleanup removes the spilled runs and lets go of the memory; the sorter is
// of no further use. It is idempotent.
func (s *sorter) cleanup() {
	s.drain()
	s.srt.Close()
}

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
	if err := s.drain(); err != nil {
		return err
	}
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
