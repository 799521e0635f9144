package extsort

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
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
	if err := s.wait(); err != nil {
		return err
	}
	if err := s.compactRuns(); err != nil {
		return err
	}
	ents := s.sortDedup()
	if len(s.runs) > 0 {
		return s.merge(s.runs, ents, fn)
	}
	for i := range ents {
		e := &ents[i]
		key, val, tomb := s.rec(e)
		if tomb {
			continue
		}
		if err := fn(e.part, key, val); err != nil {
			return err
		}
	}
	return nil
}

// source is one sorted input of the merge: a spilled run or the entries
// still in memory. Its current record is part, pfx (the key's first 8
// bytes, as in entry), key, val and tomb; key and val are valid until next.
// ord orders sources by partition, and puts ended ones last: the
// partition with its sign bit flipped, or doneOrd.
type source struct {
	ord  uint64
	pfx  uint64
	idx  int // higher is newer
	done bool
	tomb bool
	part int32
	key  []byte
	val  []byte

	// a run: buf[pos:end] is read and not yet taken; left is what the file
	// still holds past it
	name     string
	f        *os.File
	buf      []byte
	pos, end int
	left     int64
	// memory
	m    *mem
	ents []entry
}

// doneOrd is the ord of an ended source, above every partition's.
const doneOrd = 1 << 32

func partOrd(p int32) uint64 { return uint64(uint32(p) ^ (1 << 31)) }

// maxFanIn is the most runs a merge reads at once. Beyond it, Each first
// merges the oldest runs into one (compactRuns), so that the open files and
// read buffers stay bounded however far the data outgrows the limit.
const maxFanIn = 64

// runBuf returns the size of each run's read buffer: 256 KiB, or less when
// maxFanIn of them would hold more than the limit (16 KiB at least).
func (s *Sorter) runBuf() int {
	return min(256<<10, max(16<<10, s.limit/(maxFanIn+1)))
}

// compactRuns merges the oldest runs into one new run until at most
// maxFanIn are left. The merge starts at the oldest run, so nothing older
// than the runs it merges exists: it keeps only each key's last live
// version and drops tombstones, as Each does. The runs it merged are
// removed once the new one is written; on an error they stay as they were.
func (s *Sorter) compactRuns() error {
	for len(s.runs) > maxFanIn {
		k := min(maxFanIn, len(s.runs)-maxFanIn+1)
		f, err := createRun(s.dir, s.pattern)
		if err != nil {
			return fmt.Errorf("extsort: merge runs: %w", err)
		}
		if s.wbuf == nil {
			s.wbuf = make([]byte, 0, writeBufSize)
		}
		b := s.wbuf[:0]
		err = s.merge(s.runs[:k], nil, func(part int32, key, val []byte) error {
			b = binary.BigEndian.AppendUint32(b, uint32(part))
			b = binary.AppendUvarint(b, uint64(len(key)))
			b = binary.AppendUvarint(b, uint64(len(val))+1)
			b = append(b, key...)
			b = append(b, val...)
			if len(b) >= writeBufSize {
				_, err := f.Write(b)
				b = b[:0]
				return err
			}
			return nil
		})
		if err == nil && len(b) > 0 {
			_, err = f.Write(b)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(f.Name())
			return fmt.Errorf("extsort: merge runs into %s: %w", f.Name(), err)
		}
		for _, r := range s.runs[:k] {
			os.Remove(r)
		}
		s.runs = append([]string{f.Name()}, s.runs[k:]...)
	}
	return nil
}

// maxHeader is the longest a record's header can be in a run.
const maxHeader = 4 + 2*binary.MaxVarintLen64

// errBadHeader is a run's record header that no spill wrote.
var errBadHeader = errors.New("record header out of range")

// next moves src to its next record, or sets src.done at its end.
func (src *source) next() error {
	if src.f == nil {
		if len(src.ents) == 0 {
			src.done, src.ord = true, doneOrd
			return nil
		}
		e := &src.ents[0]
		src.ents = src.ents[1:]
		src.part, src.pfx, src.ord = e.part, e.pfx, partOrd(e.part)
		src.key, src.val, src.tomb = src.m.rec(e)
		return nil
	}
	if src.end-src.pos < maxHeader && src.left > 0 {
		if err := src.fill(maxHeader); err != nil {
			return err
		}
	}
	b := src.buf[src.pos:src.end]
	if len(b) == 0 {
		src.done, src.ord = true, doneOrd
		return nil
	}
	if len(b) < 4 {
		return io.ErrUnexpectedEOF
	}
	kl, n1 := binary.Uvarint(b[4:])
	if n1 <= 0 {
		return headerErr(n1)
	}
	vl, n2 := binary.Uvarint(b[4+n1:])
	if n2 <= 0 {
		return headerErr(n2)
	}
	if kl > math.MaxInt32 || vl > math.MaxInt32+1 {
		return errBadHeader
	}
	h := 4 + n1 + n2
	tomb := vl == 0
	if vl > 0 {
		vl--
	}
	need := h + int(kl) + int(vl)
	if need > len(b) {
		if int64(need-len(b)) > src.left {
			return io.ErrUnexpectedEOF
		}
		if err := src.fill(need); err != nil {
			return err
		}
		b = src.buf[src.pos:src.end]
	}
	src.part = int32(binary.BigEndian.Uint32(b))
	src.ord = partOrd(src.part)
	src.key = b[h : h+int(kl) : h+int(kl)]
	src.val = b[h+int(kl) : need : need]
	src.pfx = keyPrefix(src.key)
	src.tomb = tomb
	src.pos += need
	return nil
}

// headerErr is the error of binary.Uvarint's n <= 0 on a header: a header
// cut short by the file's end, or too long a varint.
func headerErr(n int) error {
	if n == 0 {
		return io.ErrUnexpectedEOF
	}
	return errBadHeader
}

// fill moves what is left in the buffer to its front and reads until it
// holds need bytes or the file ends, growing the buffer for a record larger
// than it.
func (src *source) fill(need int) error {
	n := copy(src.buf, src.buf[src.pos:src.end])
	if need > len(src.buf) {
		nb := make([]byte, need)
		copy(nb, src.buf[:n])
		src.buf = nb
	}
	src.pos, src.end = 0, n
	for src.end < need && src.left > 0 {
		m, err := src.f.Read(src.buf[src.end:])
		src.end += m
		src.left -= int64(m)
		if err == io.EOF {
			if src.left > 0 {
				return io.ErrUnexpectedEOF // the file shrank under us
			}
			break
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// less reports whether a's record comes before b's: by partition, key, and
// the newer source first among equal keys; an ended source comes last.
func less(a, b *source) bool {
	if a.ord != b.ord {
		return a.ord < b.ord
	}
	if a.pfx != b.pfx {
		return a.pfx < b.pfx
	}
	if c := bytes.Compare(a.key, b.key); c != 0 {
		return c < 0
	}
	return a.idx > b.idx
}

// loserTree picks the least of k sources: tree[0] is the winner, tree[n]
// for 0 < n < k the loser of the match at node n, whose children are 2n and
// 2n+1; node k+i is source i. A source's next record takes log2(k)
// comparisons to place, against the losers on its way up.
type loserTree struct {
	srcs []source
	tree []int
}

func newLoserTree(srcs []source) *loserTree {
	t := &loserTree{srcs: srcs, tree: make([]int, max(len(srcs), 1))}
	if len(srcs) > 0 {
		t.tree[0] = t.build(1)
	}
	return t
}

// build plays the matches below node n and returns its winner.
func (t *loserTree) build(n int) int {
	k := len(t.srcs)
	if n >= k {
		return n - k
	}
	a, b := t.build(2*n), t.build(2*n+1)
	if less(&t.srcs[b], &t.srcs[a]) {
		a, b = b, a
	}
	t.tree[n] = b
	return a
}

// replay places the winner again after its source moved on. It compares
// partitions and prefixes inline, as less does, and calls less only when
// both tie (rare for keys that differ in their first 8 bytes).
func (t *loserTree) replay() {
	srcs, tree := t.srcs, t.tree
	w := tree[0]
	for n := (w + len(srcs)) / 2; n > 0; n /= 2 {
		l := tree[n]
		a, b := &srcs[l], &srcs[w]
		if a.ord < b.ord || a.ord == b.ord && (a.pfx < b.pfx || a.pfx == b.pfx && less(a, b)) {
			tree[n], w = w, l
		}
	}
	tree[0] = w
}

// merge k-way merges the runs (oldest first) and the sorted in-memory
// entries ents (newest); for equal keys the newest input wins.
func (s *Sorter) merge(runs []string, ents []entry, fn func(part int32, key, val []byte) error) error {
	srcs := make([]source, 0, len(runs)+1)
	defer func() {
		for i := range srcs {
			if srcs[i].f != nil {
				srcs[i].f.Close()
			}
		}
	}()
	for i, name := range runs {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("extsort: read run: %w", err)
		}
		srcs = append(srcs, source{idx: i, name: name, f: f, buf: make([]byte, s.runBuf())})
		src := &srcs[len(srcs)-1]
		fi, err := f.Stat()
		if err == nil {
			src.left = fi.Size()
			err = src.next()
		}
		if err != nil {
			return fmt.Errorf("extsort: read run %s: %w", name, err)
		}
	}
	if len(ents) > 0 {
		srcs = append(srcs, source{idx: len(runs), m: &s.mem, ents: ents})
		srcs[len(srcs)-1].next()
	}
	t := newLoserTree(srcs)
	var lastPart int32
	var lastPfx uint64
	var lastKey []byte // nil: nothing handed out yet
	for len(srcs) > 0 {
		src := &srcs[t.tree[0]]
		if src.done {
			return nil
		}
		if lastKey == nil || src.pfx != lastPfx || src.part != lastPart || !bytes.Equal(src.key, lastKey) {
			lastPart, lastPfx = src.part, src.pfx
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
		if err := src.next(); err != nil {
			return fmt.Errorf("extsort: read run %s: %w", src.name, err)
		}
		t.replay()
	}
	return nil
}
