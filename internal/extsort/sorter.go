package extsort

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"unsafe"
)

// Sorter collects records, keeps the last version of each (partition, key)
// and hands them out in (partition, key) order, holding about limit bytes in
// memory and spilling sorted runs to files beyond that (see the package
// doc). The zero value is not usable; call New.
//
// Records are kept in large byte chunks; the entries that sort them are
// small pointer-free structs pointing into the chunks, so neither the
// garbage collector nor the sort touches the records themselves. Entries
// sort by (partition, first 8 key bytes) with integer compares and fall back
// to comparing bytes only when those tie.
type Sorter struct {
	limit   int
	chunk   int // the size of a chunk: chunkSize, or less for a small limit
	dir     string
	pattern string // run file names, for os.CreateTemp
	err     error  // sticky: a failed spill, or ErrClosed

	mem             // the records added since the last spill: at most half of limit
	free  [][]byte  // emptied chunks of s.chunk bytes, for the next records
	runs  []string  // spilled run files, oldest first (the one being written too)
	spare mem       // the sort buffers of the last spill that ended, emptied: the next records' (no chunks)
	bg    *spillJob // the spill being sorted and written on its own goroutine; nil if none
	wbuf  []byte    // a run's bytes on their way to its file; bg's while it runs
}

// mem is a set of records in memory and the buffers that sort them. Add
// fills one while a spill sorts and writes the other.
type mem struct {
	chunks   [][]byte // arena; entries point into it
	used     int      // bytes in chunks, both sort buffers' capacity, the rest of entOverhead for each entry
	recBytes int      // bytes in chunks
	ents     []entry
	scratch  []entry // the radix sort's other buffer, kept across spills
}

// spillJob is one spill: m's records sorted, deduplicated and written to f
// on a goroutine of its own; done is closed when it has ended, with err.
type spillJob struct {
	m    mem
	f    *os.File
	wbuf []byte
	err  error
	done chan struct{}
}

// entry is one record in memory: 24 bytes, what the radix sort moves. The
// record itself, at chunks[chunk][off:off+rlen], is its key length
// (uvarint), value length plus one (uvarint, 0 for a tombstone), key and
// value: a run's record without the partition.
type entry struct {
	pfx   uint64 // first 8 key bytes, big endian, zero-padded
	part  int32
	chunk int32
	off   int32
	rlen  int32
}

const (
	chunkSize    = 1 << 20 // the most a chunk holds; a small limit takes smaller ones (New)
	minChunk     = 16 << 10
	entOverhead  = 72 // an entry, its copy in the sort's other buffer (both counted by capacity) and slack, counted against the limit
	entSize      = int(unsafe.Sizeof(entry{}))
	maxInlineRec = chunkSize / 4 // a record larger than this goes to a run file apart from writeRun's buffer
)

// New returns a Sorter that holds about limit bytes of records in memory
// and spills sorted runs to files in dir named by pattern, as
// os.CreateTemp takes it (a "*" is replaced by a random string), each time
// the records added since the last spill hold half of limit (a limit too
// small for two records, 0 included, spills at every Add). dir must exist
// once the first run is spilled.
func New(limit int, dir, pattern string) *Sorter {
	chunk := chunkSize // small enough that both halves' chunks, each with one partly filled, fit the limit
	for chunk > minChunk && chunk > limit/8 {
		chunk /= 2
	}
	return &Sorter{limit: limit, chunk: chunk, dir: dir, pattern: pattern}
}

// Add records the value val of key in partition part; a nil val is a
// tombstone: the key is deleted. Of the records added with the same
// partition and key, the last wins, whenever it was added (before or after
// a spill, or an Each). Add copies key and val; the caller may reuse them.
// It returns an error if spilling a run fails (the Sorter is then unusable:
// see the package doc for which Add reports it) or ErrClosed.
func (s *Sorter) Add(part int32, key, val []byte) error {
	if s.bg != nil {
		select {
		case <-s.bg.done: // ended: report its error now, and take its memory back
			if err := s.wait(); err != nil {
				return err
			}
		default:
		}
	}
	if s.err != nil {
		return s.err
	}
	vl1 := uint64(len(val)) + 1
	if val == nil {
		vl1 = 0
	}
	n := uvarintLen(uint64(len(key))) + uvarintLen(vl1) + len(key) + len(val)
	if len(s.ents) == cap(s.ents) && !s.growEnts() {
		// a spill costs less than copying the entries for a few more
		if err := s.spill(); err != nil {
			s.err = err
			return err
		}
	}
	ci := s.place(n)
	c := s.chunks[ci]
	off := len(c)
	c = binary.AppendUvarint(c, uint64(len(key)))
	c = binary.AppendUvarint(c, vl1)
	c = append(c, key...)
	c = append(c, val...)
	s.chunks[ci] = c
	s.ents = append(s.ents, entry{pfx: keyPrefix(key), part: part, chunk: int32(ci), off: int32(off), rlen: int32(n)})
	s.recBytes += n
	s.used += n + entOverhead - 2*entSize // the entry and its sort copy are counted by capacity
	if len(s.ents) > cap(s.scratch) {
		s.used += entSize // the sort's copy to come
	}
	if len(s.free) > 0 && s.used+s.others()+len(s.free)*s.chunk > s.limit {
		s.trimFree()
	}
	if s.used >= s.half() || s.bg != nil && s.used+s.others() >= s.limit {
		if err := s.spill(); err != nil {
			s.err = err
			return err
		}
	}
	return nil
}

// place returns the index of the chunk that takes the next record, of n
// bytes, starting a new chunk if the last one has no room.
func (s *Sorter) place(n int) int {
	ci := len(s.chunks) - 1
	if ci >= 0 && cap(s.chunks[ci])-len(s.chunks[ci]) >= n {
		return ci
	}
	if ci >= 0 {
		s.used += cap(s.chunks[ci]) - len(s.chunks[ci]) // left unused
	}
	if n > s.chunk/4 {
		s.chunks = append(s.chunks, make([]byte, 0, n))
	} else {
		s.chunks = append(s.chunks, s.newChunk())
	}
	return ci + 1
}

// growEnts makes room in ents for as many more entries as the records so
// far suggest the limit leaves room for (append's growth of a quarter
// copies the entries about five times over and clears as much fresh
// memory). The capacity is counted in used: entries that do not come cost
// an earlier spill, never more memory than limit. It returns false, and
// grows nothing, when the room left is for fewer than a sixteenth more
// entries: a spill is then cheaper than copying them all.
func (s *Sorter) growEnts() bool {
	n := len(s.ents)
	more := max(n, 16)
	if n > 0 {
		est := max((s.half()-s.used)/(s.recBytes/n+entOverhead), 0)
		if n >= 4096 && est < n/16 {
			return false
		}
		est += est/16 + 16
		if n < 4096 { // too few records to go by: at most double
			more = min(more, est)
		} else {
			more = est
		}
	}
	old := cap(s.ents)
	ents := make([]entry, n, n+more) // not slices.Grow: append's growth takes a quarter more at least
	copy(ents, s.ents)
	s.ents = ents
	s.used += (cap(s.ents) - old) * entSize
	return true
}

// half is what the records being added may hold, of limit: the other half
// is the spill's that sorts and writes the records before them.
func (s *Sorter) half() int { return s.limit / 2 }

// others is what the Sorter holds besides the records being added and the
// emptied chunks: the spill in progress, or the sort buffers the last one
// left for the next.
func (s *Sorter) others() int {
	if s.bg != nil {
		return s.bg.m.used
	}
	return (cap(s.spare.ents) + cap(s.spare.scratch)) * entSize
}

// trimFree lets go of emptied chunks until what they, used and others
// count fit in limit: records unlike the last spill's (fewer bytes and more
// entries, or records too large for a chunk) would not refill them.
func (s *Sorter) trimFree() {
	for len(s.free) > 0 && s.used+s.others()+len(s.free)*s.chunk > s.limit {
		s.free[len(s.free)-1] = nil
		s.free = s.free[:len(s.free)-1]
	}
}

// Runs returns how many runs the Sorter has spilled to files so far.
func (s *Sorter) Runs() int { return len(s.runs) }

// Close removes the spilled runs and lets go of the memory. It returns the
// first failure to remove a run, if any; it is idempotent, and after it Add
// and Each return ErrClosed.
func (s *Sorter) Close() error {
	s.wait() // its error was the last Add's or Each's to report, if any
	var err error
	for _, r := range s.runs {
		if rerr := os.Remove(r); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("extsort: remove run: %w", rerr)
		}
	}
	s.runs, s.mem, s.spare, s.free, s.wbuf = nil, mem{}, mem{}, nil, nil
	s.err = ErrClosed
	return err
}

// newChunk returns an empty chunk of s.chunk bytes, one a spill emptied if
// there is one: refilling it costs neither an allocation nor clearing fresh
// memory.
func (s *Sorter) newChunk() []byte {
	if n := len(s.free); n > 0 {
		c := s.free[n-1]
		s.free[n-1] = nil
		s.free = s.free[:n-1]
		return c
	}
	return make([]byte, 0, s.chunk)
}

func keyPrefix(k []byte) uint64 {
	if len(k) >= 8 {
		return binary.BigEndian.Uint64(k)
	}
	var b [8]byte
	copy(b[:], k)
	return binary.BigEndian.Uint64(b[:])
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// rec returns e's key and value, and whether it is a tombstone (its value
// then nil).
func (s *mem) rec(e *entry) (key, val []byte, tomb bool) {
	r := s.chunks[e.chunk][e.off : e.off+e.rlen : e.off+e.rlen]
	var kl, vl1 uint64
	var h int
	if len(r) >= 2 && r[0] < 0x80 && r[1] < 0x80 {
		kl, vl1, h = uint64(r[0]), uint64(r[1]), 2
	} else {
		var n1, n2 int
		kl, n1 = binary.Uvarint(r)
		vl1, n2 = binary.Uvarint(r[n1:])
		h = n1 + n2
	}
	key = r[h : h+int(kl) : h+int(kl)]
	if vl1 == 0 {
		return key, nil, true
	}
	return key, r[h+int(kl):], false
}

func (s *mem) key(e *entry) []byte {
	k, _, _ := s.rec(e)
	return k
}

// sortDedup sorts the in-memory entries by (partition, key) keeping, for
// equal keys, only the one added last. It radix-sorts by (partition, first
// 8 key bytes), which is stable, so entries arrive in add order within equal
// prefixes; only those runs are then sorted by their full keys, stably too.
// Sorted entries stay in order before entries added later, so sorting again
// after more Adds still lets the last added win.
func (s *mem) sortDedup() []entry {
	ents := s.radixSort()
	for i := 0; i < len(ents); {
		j := i + 1
		for j < len(ents) && ents[j].part == ents[i].part && ents[j].pfx == ents[i].pfx {
			j++
		}
		if j-i > 1 {
			slices.SortStableFunc(ents[i:j], func(a, b entry) int { return bytes.Compare(s.key(&a), s.key(&b)) })
		}
		i = j
	}
	out := ents[:0]
	for i := range ents {
		e := &ents[i]
		if i+1 < len(ents) {
			nx := &ents[i+1]
			if nx.part == e.part && nx.pfx == e.pfx && bytes.Equal(s.key(nx), s.key(e)) {
				continue // a later version follows
			}
		}
		out = append(out, *e)
	}
	s.ents = out
	return out
}

// radixSort sorts s.ents by (part, pfx), stably, least significant byte
// first, skipping the bytes on which every entry agrees. Partitions sort as
// signed integers (their sign bit flipped). One pass counts every byte's
// values; the other buffer is kept for the next sort (used counts it by
// capacity).
func (s *mem) radixSort() []entry {
	src := s.ents
	if len(src) < 2 {
		return src
	}
	var count [12][256]int
	for i := range src {
		e := &src[i]
		p, q := e.pfx, uint32(e.part)^(1<<31)
		count[0][p&0xff]++
		count[1][p>>8&0xff]++
		count[2][p>>16&0xff]++
		count[3][p>>24&0xff]++
		count[4][p>>32&0xff]++
		count[5][p>>40&0xff]++
		count[6][p>>48&0xff]++
		count[7][p>>56]++
		count[8][q&0xff]++
		count[9][q>>8&0xff]++
		count[10][q>>16&0xff]++
		count[11][q>>24]++
	}
	dst := s.scratch
	if cap(dst) < len(src) {
		dst = make([]entry, len(src), cap(src)) // as large as ents: the next fill may use all of it
	}
	dst = dst[:len(src)]
	e0 := &src[0]
	for d := range 12 {
		var first int
		if d < 8 {
			first = int(e0.pfx>>(8*d)) & 0xff
		} else {
			first = int((uint32(e0.part)^(1<<31))>>(8*(d-8))) & 0xff
		}
		c := &count[d]
		if c[first] == len(src) {
			continue // every entry has the same byte here
		}
		pos := 0
		for b := range c {
			pos, c[b] = pos+c[b], pos
		}
		if d < 8 {
			sh := uint(8 * d)
			for i := range src {
				b := src[i].pfx >> sh & 0xff
				dst[c[b]] = src[i]
				c[b]++
			}
		} else {
			sh := uint(8 * (d - 8))
			for i := range src {
				b := (uint32(src[i].part) ^ (1 << 31)) >> sh & 0xff
				dst[c[b]] = src[i]
				c[b]++
			}
		}
		src, dst = dst, src
	}
	s.ents, s.scratch = src, dst[:0]
	return src
}

// spill hands the records in memory to a goroutine that sorts them, drops
// the versions later ones replace and writes the rest to a new run file,
// and starts afresh in the other half of the memory: the buffers of the
// spill before, which it waits for first. A run is a sequence of records:
// partition (uint32 big endian), key length (uvarint), value length plus
// one (uvarint, 0 for a tombstone), key, value. It returns the error of the
// spill before, or of creating the run file; a failure to write this run
// is reported by the first Add after the spill has ended, the next spill,
// or Each (Close waits for the spill and drops its error).
func (s *Sorter) spill() error {
	if err := s.wait(); err != nil {
		return err
	}
	f, err := createRun(s.dir, s.pattern)
	if err != nil {
		return fmt.Errorf("extsort: spill run: %w", err)
	}
	s.runs = append(s.runs, f.Name())
	j := &spillJob{m: s.mem, f: f, wbuf: s.wbuf, done: make(chan struct{})}
	// What the spill holds, counted as it will be: used counts the last
	// chunk by its bytes and the sort's other buffer by the entries, but
	// both are allocated whole.
	if n := len(j.m.chunks); n > 0 {
		j.m.used += cap(j.m.chunks[n-1]) - len(j.m.chunks[n-1])
	}
	if cap(j.m.scratch) < len(j.m.ents) {
		j.m.used += (cap(j.m.ents) - len(j.m.ents)) * entSize
	}
	s.mem, s.spare, s.wbuf = s.spare, mem{}, nil
	s.used = (cap(s.ents) + cap(s.scratch)) * entSize // the sort buffers stay
	s.bg = j
	go j.run()
	return nil
}

// createRun creates a run file; tests replace it.
var createRun = os.CreateTemp

func (j *spillJob) run() {
	defer close(j.done)
	var err error
	j.wbuf, err = writeRun(j.f, &j.m, j.m.sortDedup(), j.wbuf)
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		j.err = fmt.Errorf("extsort: spill run %s: %w", j.f.Name(), err)
	}
}

// wait waits for the spill in progress, if any, and takes its memory back:
// its chunks of s.chunk bytes for the next records (larger ones are dropped),
// its sort buffers for the next spill. It returns the spill's error, which
// is then the Sorter's.
func (s *Sorter) wait() error {
	j := s.bg
	if j == nil {
		return s.err
	}
	<-j.done
	s.bg, s.wbuf = nil, j.wbuf
	for i, c := range j.m.chunks {
		if cap(c) == s.chunk {
			s.free = append(s.free, c[:0])
		}
		j.m.chunks[i] = nil
	}
	s.spare = mem{chunks: j.m.chunks[:0], ents: j.m.ents[:0], scratch: j.m.scratch[:0]}
	if cap(s.spare.scratch) > cap(s.spare.ents) { // the sort swaps them: fill the larger
		s.spare.ents, s.spare.scratch = s.spare.scratch, s.spare.ents
	}
	if j.err != nil && s.err == nil {
		s.err = j.err
	}
	s.trimFree()
	return s.err
}

// writeBufSize is how many bytes of a run are gathered before a write.
const writeBufSize = 1 << 20

// writeRun writes ents' records, which are m's, to f through wbuf (nil: a
// new one) and returns the buffer for the next run. Records larger than
// maxInlineRec go to f directly.
func writeRun(f *os.File, m *mem, ents []entry, wbuf []byte) ([]byte, error) {
	if wbuf == nil {
		wbuf = make([]byte, 0, writeBufSize)
	}
	b := wbuf[:0]
	for i := range ents {
		e := &ents[i]
		if len(b) > writeBufSize-(4+2*binary.MaxVarintLen32+maxInlineRec) {
			if _, err := f.Write(b); err != nil {
				return wbuf, err
			}
			b = b[:0]
		}
		b = binary.BigEndian.AppendUint32(b, uint32(e.part))
		r := m.chunks[e.chunk][e.off : e.off+e.rlen]
		if len(r) > maxInlineRec {
			if _, err := f.Write(b); err != nil {
				return wbuf, err
			}
			b = b[:0]
			if _, err := f.Write(r); err != nil {
				return wbuf, err
			}
			continue
		}
		b = append(b, r...)
	}
	if len(b) > 0 {
		if _, err := f.Write(b); err != nil {
			return wbuf, err
		}
	}
	return b, nil
}
