package extsort

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// Each calls fn for every live record, the last version of each
// (partition, key), in (partition, key) order: partitions as signed
// integers ascending, keys in byte order; tombstoned keys are left out. The
// slices are the Sorter's and valid only during fn; an empty value may come
// as nil. Each may be called more than once, and Add may follow it; every
// call sees everything added so far. An error of fn stops the walk and is
// returned as is; an error reading a run is returned wrapped; after Close,
// Each returns ErrClosed.
func (s *Sorter) Each(fn func(part int32, key, val []byte) error) error {
	if s.err != nil {
		return s.err
	}
	ents := s.sortDedup()
	if len(s.runs) > 0 {
		return s.merge(ents, fn)
	}
	for i := range ents {
		e := &ents[i]
		if e.vlen < 0 {
			continue
		}
		if err := fn(e.part, s.key(e), s.val(e)); err != nil {
			return err
		}
	}
	return nil
}

// source is one sorted input of the merge: a spilled run or the entries
// still in memory.
type source struct {
	idx  int // higher is newer
	part int32
	key  []byte
	val  []byte
	tomb bool

	// a run
	name string
	r    *bufio.Reader
	f    *os.File
	// memory
	s    *Sorter
	ents []entry
}

// next moves src to its next record; false at its end.
func (src *source) next() (bool, error) {
	if src.r == nil {
		if len(src.ents) == 0 {
			return false, nil
		}
		e := &src.ents[0]
		src.ents = src.ents[1:]
		src.part, src.key, src.val, src.tomb = e.part, src.s.key(e), src.s.val(e), e.vlen < 0
		return true, nil
	}
	var p [4]byte
	if _, err := io.ReadFull(src.r, p[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	src.part = int32(binary.BigEndian.Uint32(p[:]))
	kl, err := binary.ReadUvarint(src.r)
	if err != nil {
		return false, noEOF(err)
	}
	vl, err := binary.ReadUvarint(src.r)
	if err != nil {
		return false, noEOF(err)
	}
	src.key = slices.Grow(src.key[:0], int(kl))[:kl]
	if _, err := io.ReadFull(src.r, src.key); err != nil {
		return false, noEOF(err)
	}
	src.tomb = vl == 0
	if vl > 0 {
		vl--
	}
	src.val = slices.Grow(src.val[:0], int(vl))[:vl]
	if _, err := io.ReadFull(src.r, src.val); err != nil {
		return false, noEOF(err)
	}
	return true, nil
}

// noEOF turns an end of file inside a record into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

type srcHeap []*source

func (h srcHeap) Len() int { return len(h) }
func (h srcHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.part != b.part {
		return a.part < b.part
	}
	if c := bytes.Compare(a.key, b.key); c != 0 {
		return c < 0
	}
	return a.idx > b.idx // newest first
}
func (h srcHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *srcHeap) Push(x any)   { *h = append(*h, x.(*source)) }
func (h *srcHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// merge k-way merges the runs and the sorted in-memory entries mem (newest);
// for equal keys the newest input wins.
func (s *Sorter) merge(mem []entry, fn func(part int32, key, val []byte) error) error {
	var h srcHeap
	defer func() {
		for _, src := range h {
			if src.f != nil {
				src.f.Close()
			}
		}
	}()
	for i, name := range s.runs {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("extsort: read run: %w", err)
		}
		src := &source{idx: i, name: name, f: f, r: bufio.NewReaderSize(f, 256<<10)}
		ok, err := src.next()
		if err != nil || !ok {
			f.Close()
			if err != nil {
				return fmt.Errorf("extsort: read run %s: %w", name, err)
			}
			continue
		}
		h = append(h, src)
	}
	if len(mem) > 0 {
		src := &source{idx: len(s.runs), s: s, ents: mem}
		src.next()
		h = append(h, src)
	}
	heap.Init(&h)
	var lastPart int32
	var lastKey []byte // nil: nothing handed out yet
	for h.Len() > 0 {
		src := h[0]
		if lastKey == nil || src.part != lastPart || !bytes.Equal(src.key, lastKey) {
			lastPart = src.part
			lastKey = append(lastKey[:0], src.key...)
			if lastKey == nil {
				lastKey = []byte{}
			}
			if !src.tomb {
				if err := fn(src.part, src.key, src.val); err != nil {
					return err
				}
			}
		}
		ok, err := src.next()
		if err != nil {
			return fmt.Errorf("extsort: read run %s: %w", src.name, err)
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			if src.f != nil {
				src.f.Close()
			}
			heap.Pop(&h)
		}
	}
	return nil
}
