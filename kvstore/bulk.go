package kvstore

import (
	"bufio"
	"bytes"
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// sorter collects the records of a full restore, keeps the last version of
// each key, and hands them out in (partition, key) order so that an empty
// cache can be filled with sequential inserts. It holds at most about limit
// bytes in memory; beyond that it spills sorted runs to files in dir.
type sorter struct {
	limit int
	dir   string

	chunks [][]byte // arena; entries point into it
	used   int      // bytes in chunks plus entry overhead
	ents   []sortEnt
	runs   []string // spilled run files, oldest first
}

type sortEnt struct {
	part int32
	key  []byte
	val  []byte // nil: tombstone
}

const (
	chunkSize    = 1 << 20
	entOverhead  = 64 // sortEnt plus slack, counted against the limit
	maxInlineRec = chunkSize / 4
)

func newSorter(limit int, dir string) *sorter { return &sorter{limit: limit, dir: dir} }

// add records one record; later adds of the same (partition, key) win.
func (s *sorter) add(part int32, key, val []byte) error {
	k := s.copyIn(key)
	var v []byte
	if val != nil {
		v = s.copyIn(val)
		if v == nil {
			v = []byte{}
		}
	}
	s.ents = append(s.ents, sortEnt{part: part, key: k, val: v})
	s.used += len(key) + len(val) + entOverhead
	if s.used >= s.limit {
		return s.spill()
	}
	return nil
}

func (s *sorter) copyIn(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	if len(b) > maxInlineRec {
		return bytes.Clone(b)
	}
	n := len(s.chunks)
	if n == 0 || cap(s.chunks[n-1])-len(s.chunks[n-1]) < len(b) {
		s.chunks = append(s.chunks, make([]byte, 0, chunkSize))
		n++
	}
	c := s.chunks[n-1]
	start := len(c)
	c = append(c, b...)
	s.chunks[n-1] = c
	return c[start:len(c):len(c)]
}

// sortDedup sorts the in-memory entries by (partition, key) keeping, for
// equal keys, only the one added last.
func (s *sorter) sortDedup() []sortEnt {
	slices.SortStableFunc(s.ents, func(a, b sortEnt) int {
		if c := cmp.Compare(a.part, b.part); c != 0 {
			return c
		}
		return bytes.Compare(a.key, b.key)
	})
	out := s.ents[:0]
	for i, e := range s.ents {
		if i+1 < len(s.ents) && s.ents[i+1].part == e.part && bytes.Equal(s.ents[i+1].key, e.key) {
			continue // a later version follows
		}
		out = append(out, e)
	}
	return out
}

func (s *sorter) reset() {
	s.chunks, s.ents, s.used = nil, s.ents[:0], 0
}

// spill writes the sorted, deduplicated entries to a run file.
func (s *sorter) spill() error {
	ents := s.sortDedup()
	f, err := os.CreateTemp(s.dir, "restore-run-*.tmp")
	if err != nil {
		return fmt.Errorf("kvstore: spill restore run: %w", err)
	}
	s.runs = append(s.runs, f.Name())
	w := bufio.NewWriterSize(f, 1<<20)
	var hdr [4 + 2*binary.MaxVarintLen64]byte
	for _, e := range ents {
		b := binary.BigEndian.AppendUint32(hdr[:0], uint32(e.part))
		b = binary.AppendUvarint(b, uint64(len(e.key)))
		vl := uint64(0) // 0: tombstone, else len+1
		if e.val != nil {
			vl = uint64(len(e.val)) + 1
		}
		b = binary.AppendUvarint(b, vl)
		if _, err := w.Write(b); err != nil {
			break
		}
		w.Write(e.key)
		w.Write(e.val)
	}
	if err = w.Flush(); err == nil {
		err = f.Close()
	} else {
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("kvstore: spill restore run: %w", err)
	}
	s.reset()
	return nil
}

// each calls fn for every live (partition, key, value) in (partition, key)
// order; tombstoned keys are left out. The slices are valid only during fn.
func (s *sorter) each(fn func(part int32, key, val []byte) error) error {
	defer s.cleanup()
	if len(s.runs) == 0 {
		for _, e := range s.sortDedup() {
			if e.val == nil {
				continue
			}
			if err := fn(e.part, e.key, e.val); err != nil {
				return err
			}
		}
		return nil
	}
	if len(s.ents) > 0 {
		if err := s.spill(); err != nil {
			return err
		}
	}
	return s.merge(fn)
}

func (s *sorter) cleanup() {
	for _, r := range s.runs {
		os.Remove(r)
	}
	s.runs = nil
	s.reset()
}

// runReader reads one spilled run.
type runReader struct {
	idx  int // run index: higher is newer
	r    *bufio.Reader
	f    *os.File
	part int32
	key  []byte
	val  []byte
	tomb bool
}

func (rr *runReader) next() (bool, error) {
	var p [4]byte
	if _, err := io.ReadFull(rr.r, p[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	rr.part = int32(binary.BigEndian.Uint32(p[:]))
	kl, err := binary.ReadUvarint(rr.r)
	if err != nil {
		return false, err
	}
	vl, err := binary.ReadUvarint(rr.r)
	if err != nil {
		return false, err
	}
	rr.key = slices.Grow(rr.key[:0], int(kl))[:kl]
	if _, err := io.ReadFull(rr.r, rr.key); err != nil {
		return false, err
	}
	rr.tomb = vl == 0
	if vl > 0 {
		vl--
	}
	rr.val = slices.Grow(rr.val[:0], int(vl))[:vl]
	if _, err := io.ReadFull(rr.r, rr.val); err != nil {
		return false, err
	}
	return true, nil
}

type runHeap []*runReader

func (h runHeap) Len() int { return len(h) }
func (h runHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.part != b.part {
		return a.part < b.part
	}
	if c := bytes.Compare(a.key, b.key); c != 0 {
		return c < 0
	}
	return a.idx > b.idx // newest run first
}
func (h runHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)   { *h = append(*h, x.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// merge k-way merges the runs; for equal keys the newest run wins.
func (s *sorter) merge(fn func(part int32, key, val []byte) error) error {
	var h runHeap
	defer func() {
		for _, rr := range h {
			rr.f.Close()
		}
	}()
	for i, name := range s.runs {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("kvstore: read restore run: %w", err)
		}
		rr := &runReader{idx: i, f: f, r: bufio.NewReaderSize(f, 256<<10)}
		ok, err := rr.next()
		if err != nil {
			f.Close()
			return fmt.Errorf("kvstore: read restore run: %w", err)
		}
		if !ok {
			f.Close()
			continue
		}
		h = append(h, rr)
	}
	heap.Init(&h)
	var lastPart int32 = -1
	var lastKey []byte
	for h.Len() > 0 {
		rr := h[0]
		dup := rr.part == lastPart && lastKey != nil && bytes.Equal(rr.key, lastKey)
		if !dup {
			lastPart = rr.part
			lastKey = append(lastKey[:0], rr.key...)
			if lastKey == nil {
				lastKey = []byte{}
			}
			if !rr.tomb {
				if err := fn(rr.part, rr.key, rr.val); err != nil {
					return err
				}
			}
		}
		ok, err := rr.next()
		if err != nil {
			return fmt.Errorf("kvstore: read restore run: %w", err)
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			rr.f.Close()
			heap.Pop(&h)
		}
	}
	return nil
}
