package kvstore

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// sorter collects the records of a full restore, keeps the last version of
// each key, and hands them out in (partition, key) order so that an empty
// cache can be filled sequentially. It holds at most about limit bytes in
// memory; beyond that it spills sorted runs to files in dir and merges them
// (with what is still in memory) at the end.
//
// Entries are small pointer-free structs that point into large byte chunks,
// so neither the garbage collector nor the sort touches the records
// themselves; they sort by (partition, first 8 key bytes) with integer
// compares and fall back to comparing bytes only when those tie.
type sorter struct {
	limit      int
	dir        string
	runPattern string       // spilled run file name pattern, for os.CreateTemp
	pageSize   int          // of the bbolt file writeBolt writes; 0: os.Getpagesize()
	log        *slog.Logger // nil: slog.Default()

	chunks [][]byte // arena; entries point into it
	used   int      // bytes in chunks plus entry overhead
	ents   []sortEnt
	seq    uint32   // add order, for last-wins among equal keys
	runs   []string // spilled run files, oldest first
}

type sortEnt struct {
	pfx   uint64 // first 8 key bytes, big endian, zero-padded
	part  int32
	chunk int32
	off   int32
	klen  int32
	vlen  int32 // -1: tombstone
	seq   uint32
}

const (
	chunkSize    = 1 << 20
	entOverhead  = 72 // sortEnt and its radix-sort copy plus slack, counted against the limit
	maxInlineRec = chunkSize / 4
)

// newSorter returns a sorter that spills runs named "<name>.restore-run-*.tmp"
// into dir.
func newSorter(limit int, dir, name string) *sorter {
	return &sorter{limit: limit, dir: dir, runPattern: name + runSuffix}
}

// runSuffix ends the names of spilled runs; a restore killed midway leaves
// them behind and the next Open removes them.
const runSuffix = ".restore-run-*.tmp"

func keyPrefix(k []byte) uint64 {
	if len(k) >= 8 {
		return binary.BigEndian.Uint64(k)
	}
	var b [8]byte
	copy(b[:], k)
	return binary.BigEndian.Uint64(b[:])
}

// add records one record; later adds of the same (partition, key) win.
func (s *sorter) add(part int32, key, val []byte) error {
	n := len(key) + len(val)
	var ci int
	if n > maxInlineRec {
		s.chunks = append(s.chunks, make([]byte, 0, n))
		ci = len(s.chunks) - 1
	} else {
		ci = len(s.chunks) - 1
		if ci < 0 || cap(s.chunks[ci])-len(s.chunks[ci]) < n {
			s.chunks = append(s.chunks, make([]byte, 0, chunkSize))
			ci++
		}
	}
	c := s.chunks[ci]
	off := len(c)
	c = append(c, key...)
	c = append(c, val...)
	s.chunks[ci] = c
	vlen := int32(len(val))
	if val == nil {
		vlen = -1
	}
	s.ents = append(s.ents, sortEnt{pfx: keyPrefix(key), part: part, chunk: int32(ci), off: int32(off),
		klen: int32(len(key)), vlen: vlen, seq: s.seq})
	s.seq++
	s.used += n + entOverhead
	if s.used >= s.limit {
		return s.spill()
	}
	return nil
}

func (s *sorter) key(e *sortEnt) []byte {
	return s.chunks[e.chunk][e.off : e.off+e.klen : e.off+e.klen]
}

// val returns e's value, nil for a tombstone.
func (s *sorter) val(e *sortEnt) []byte {
	if e.vlen < 0 {
		return nil
	}
	st := e.off + e.klen
	return s.chunks[e.chunk][st : st+e.vlen : st+e.vlen]
}

// sortDedup sorts the in-memory entries by (partition, key) keeping, for
// equal keys, only the one added last. It radix-sorts by (partition, first
// 8 key bytes), which is stable, so entries arrive in add order within equal
// prefixes; only those runs are then sorted by their full keys.
func (s *sorter) sortDedup() []sortEnt {
	ents := s.radixSort()
	for i := 0; i < len(ents); {
		j := i + 1
		for j < len(ents) && ents[j].part == ents[i].part && ents[j].pfx == ents[i].pfx {
			j++
		}
		if j-i > 1 {
			slices.SortStableFunc(ents[i:j], func(a, b sortEnt) int { return bytes.Compare(s.key(&a), s.key(&b)) })
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
// first, skipping the bytes on which every entry agrees.
func (s *sorter) radixSort() []sortEnt {
	src := s.ents
	if len(src) < 2 {
		return src
	}
	dst := make([]sortEnt, len(src))
	digit := func(e *sortEnt, d int) int {
		if d < 8 {
			return int(e.pfx>>(8*d)) & 0xff
		}
		return int(uint32(e.part)>>(8*(d-8))) & 0xff
	}
	for d := range 12 {
		var count [256]int
		for i := range src {
			count[digit(&src[i], d)]++
		}
		if count[digit(&src[0], d)] == len(src) {
			continue // every entry has the same byte here
		}
		pos := 0
		for b := range count {
			pos, count[b] = pos+count[b], pos
		}
		for i := range src {
			b := digit(&src[i], d)
			dst[count[b]] = src[i]
			count[b]++
		}
		src, dst = dst, src
	}
	s.ents = src
	return src
}

func (s *sorter) reset() {
	s.chunks, s.ents, s.used = nil, s.ents[:0], 0
}

// spill writes the sorted, deduplicated entries to a run file.
func (s *sorter) spill() error {
	ents := s.sortDedup()
	f, err := os.CreateTemp(s.dir, s.runPattern)
	if err != nil {
		return fmt.Errorf("kvstore: spill restore run: %w", err)
	}
	s.runs = append(s.runs, f.Name())
	w := bufio.NewWriterSize(f, 1<<20)
	var hdr [4 + 2*binary.MaxVarintLen64]byte
	for i := range ents {
		e := &ents[i]
		b := binary.BigEndian.AppendUint32(hdr[:0], uint32(e.part))
		b = binary.AppendUvarint(b, uint64(e.klen))
		b = binary.AppendUvarint(b, uint64(e.vlen+1)) // 0: tombstone, else len+1
		w.Write(b)
		w.Write(s.key(e))
		if _, err = w.Write(s.val(e)); err != nil {
			break
		}
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
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
	return s.walk(fn)
}

func (s *sorter) walk(fn func(part int32, key, val []byte) error) error {
	ents := s.sortDedup()
	if len(s.runs) == 0 {
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
	return s.merge(ents, fn)
}

func (s *sorter) cleanup() {
	for _, r := range s.runs {
		os.Remove(r)
	}
	s.runs = nil
	s.reset()
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
	r *bufio.Reader
	f *os.File
	// memory
	s    *sorter
	ents []sortEnt
}

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
		return false, err
	}
	vl, err := binary.ReadUvarint(src.r)
	if err != nil {
		return false, err
	}
	src.key = slices.Grow(src.key[:0], int(kl))[:kl]
	if _, err := io.ReadFull(src.r, src.key); err != nil {
		return false, err
	}
	src.tomb = vl == 0
	if vl > 0 {
		vl--
	}
	src.val = slices.Grow(src.val[:0], int(vl))[:vl]
	if _, err := io.ReadFull(src.r, src.val); err != nil {
		return false, err
	}
	return true, nil
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
func (s *sorter) merge(mem []sortEnt, fn func(part int32, key, val []byte) error) error {
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
			return fmt.Errorf("kvstore: read restore run: %w", err)
		}
		src := &source{idx: i, f: f, r: bufio.NewReaderSize(f, 256<<10)}
		ok, err := src.next()
		if err != nil || !ok {
			f.Close()
			if err != nil {
				return fmt.Errorf("kvstore: read restore run: %w", err)
			}
			continue
		}
		h = append(h, src)
	}
	if src := (&source{idx: len(s.runs), s: s, ents: mem}); len(mem) > 0 {
		src.next()
		h = append(h, src)
	}
	heap.Init(&h)
	var lastPart int32 = -1
	var lastKey []byte
	for h.Len() > 0 {
		src := h[0]
		dup := src.part == lastPart && lastKey != nil && bytes.Equal(src.key, lastKey)
		if !dup {
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
			return fmt.Errorf("kvstore: read restore run: %w", err)
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

// writeBolt writes the sorter's live contents into a new bbolt file at path,
// one bucket per partition named bucket(p); partitions without live keys get
// no bucket. It lays the pages out itself (writePages), then makes sure the
// file is one the store will open: checkFile accepts it, and bbolt opens it
// and reads every bucket's first and last key. Should either refuse it (or
// should the bbolt this binary was built with not be the version the page
// writer was verified against), it logs a warning and loads the same data
// through bbolt's own API instead (loadBolt), which is slower but leaves a
// file bbolt wrote itself. The file is not synced; a bbolt transaction then
// writes everything else (the meta bucket).
func (s *sorter) writeBolt(path string, bucket func(p int32) []byte) error {
	defer s.cleanup()
	ps := s.pageSize
	if ps == 0 {
		ps = os.Getpagesize()
	}
	if v := builtBbolt(); v != "" && v != pageWriterBbolt {
		s.logger().Warn("kvstore: bbolt is not the version the bulk loader's page writer was verified against; loading through bbolt's API",
			"bbolt", v, "verified", pageWriterBbolt)
		return s.loadBolt(path, ps, bucket)
	}
	if err := s.writePages(path, ps, bucket); err != nil {
		return err
	}
	if err := verifyWritten(path); err != nil {
		s.logger().Warn("kvstore: bbolt refused the file the bulk loader's page writer made; loading through bbolt's API",
			"bbolt", pageWriterBbolt, "path", path, "err", err)
		return s.loadBolt(path, ps, bucket)
	}
	return nil
}

// pageWriterBbolt is the bbolt version whose file format writePages was
// verified against (TestBulkLoadPagesPinTheBboltVersion fails when go.mod
// moves to another; see there for what to check).
const pageWriterBbolt = "v1.4.3"

// builtBbolt returns the version of bbolt built into the binary; tests
// replace it.
var builtBbolt = bboltVersion

// bboltVersion returns the version of bbolt built into the binary, or "" if
// the binary does not say (test binaries do not). A replaced module counts
// as unverified.
func bboltVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, d := range info.Deps {
		if d.Path == "go.etcd.io/bbolt" {
			if d.Replace != nil {
				return "replaced by " + d.Replace.Path + " " + d.Replace.Version
			}
			return d.Version
		}
	}
	return ""
}

// verifyWritten checks a file writePages made; tests replace it to force
// the fallback.
var verifyWritten = verifyPages

func verifyPages(path string) error {
	if err := checkFile(path); err != nil {
		return err
	}
	db, err := openBolt(path, time.Second, true)
	if err != nil {
		return err
	}
	defer db.Close()
	return safeView(db, func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			c := b.Cursor()
			c.First()
			c.Last()
			return nil
		})
	})
}

// loadTxBytes is how many key and value bytes loadBolt puts in one
// transaction.
const loadTxBytes = 32 << 20

// loadBolt writes the sorter's live contents into a new bbolt file at path
// through bbolt's API: sorted Puts with FillPercent 1.0 in large
// transactions, what writePages does by hand.
func (s *sorter) loadBolt(path string, pageSize int, bucket func(p int32) []byte) (err error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true, PageSize: pageSize, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()
	tx, err := db.Begin(true)
	if err != nil {
		return err
	}
	defer func() {
		if tx != nil {
			tx.Rollback()
		}
	}()
	var (
		b     *bolt.Bucket
		cur   int32 = -1
		inTx  int
		bname []byte
	)
	err = s.walk(func(part int32, key, val []byte) error {
		if inTx >= loadTxBytes {
			if err := tx.Commit(); err != nil {
				return err
			}
			var err error
			if tx, err = db.Begin(true); err != nil {
				return err
			}
			b, inTx = tx.Bucket(bname), 0
			b.FillPercent = 1.0
		}
		if part != cur {
			cur, bname = part, bucket(part)
			var err error
			if b, err = tx.CreateBucket(bname); err != nil {
				return fmt.Errorf("create bucket %q: %w", bname, err)
			}
			b.FillPercent = 1.0
		}
		inTx += len(key) + len(val)
		// bbolt keeps the value until the commit; the sorter reuses it.
		return b.Put(key, bytes.Clone(val))
	})
	if err != nil {
		return err
	}
	err = tx.Commit()
	tx = nil
	return err
}

func (s *sorter) logger() *slog.Logger {
	if s.log == nil {
		return slog.Default()
	}
	return s.log
}

// writePages writes the sorter's live contents into a new bbolt file at
// path with pages of ps bytes, without going through bbolt's transactions:
// it lays out the B+tree pages itself, leaves packed full and in key order
// (what bbolt would write with FillPercent 1.0 and sorted inserts), then the
// branch pages above them, the root bucket, an empty freelist page (every
// page is in use) and the two meta pages. With the freelist written, bbolt
// opens the file without walking all its pages to find the free ones.
func (s *sorter) writePages(path string, ps int, bucket func(p int32) []byte) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	pw := &pageWriter{w: bufio.NewWriterSize(f, 4<<20), pageSize: ps}
	// Pages 0 and 1 are the meta pages, written last.
	if err := pw.emit(make([]byte, 2*pw.pageSize)); err != nil {
		return err
	}
	root := &treeBuilder{pw: pw}
	var data *treeBuilder
	var cur int32 = -1
	finish := func() error {
		if data == nil {
			return nil
		}
		pg, err := data.finish()
		if err != nil {
			return err
		}
		var v [16]byte // bbolt InBucket: root pgid, sequence
		binary.NativeEndian.PutUint64(v[:], pg)
		return root.add(bucket(cur), v[:], bucketLeafFlag)
	}
	err = s.walk(func(part int32, key, val []byte) error {
		if part != cur {
			if err := finish(); err != nil {
				return err
			}
			data, cur = &treeBuilder{pw: pw}, part
		}
		return data.add(key, val, 0)
	})
	if err == nil {
		err = finish()
	}
	if err != nil {
		return err
	}
	rootPg, err := root.finish()
	if err != nil {
		return err
	}
	freelistPg := pw.next
	if err := pw.emitFreelist(); err != nil {
		return err
	}
	if err := pw.w.Flush(); err != nil {
		return err
	}
	metas := make([]byte, 2*pw.pageSize)
	for i := range 2 {
		p := metas[i*pw.pageSize:]
		binary.NativeEndian.PutUint64(p[0:], uint64(i)) // page id
		binary.NativeEndian.PutUint16(p[8:], metaPageFlag)
		m := p[pageHeaderSize:]
		binary.NativeEndian.PutUint32(m[0:], boltMagic)
		binary.NativeEndian.PutUint32(m[4:], boltVersion)
		binary.NativeEndian.PutUint32(m[8:], uint32(pw.pageSize))
		binary.NativeEndian.PutUint32(m[12:], 0)          // flags
		binary.NativeEndian.PutUint64(m[16:], rootPg)     // root bucket: root
		binary.NativeEndian.PutUint64(m[24:], 0)          // root bucket: sequence
		binary.NativeEndian.PutUint64(m[32:], freelistPg) // freelist page
		binary.NativeEndian.PutUint64(m[40:], pw.next)    // high water mark
		binary.NativeEndian.PutUint64(m[48:], uint64(i))  // txid
		h := fnv.New64a()
		h.Write(m[:56])
		binary.NativeEndian.PutUint64(m[56:], h.Sum64())
	}
	_, err = f.WriteAt(metas, 0)
	return err
}

// bbolt's on-disk format (go.etcd.io/bbolt/internal/common), in the host's
// byte order as bbolt writes it.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	pageHeaderSize  = 16 // id uint64, flags uint16, count uint16, overflow uint32
	pageElemSize    = 16 // leaf: flags, pos, ksize, vsize uint32; branch: pos, ksize uint32, pgid uint64
	branchPageFlag  = 0x01
	leafPageFlag    = 0x02
	metaPageFlag    = 0x04
	bucketLeafFlag  = 0x01
	maxElemsPerPage = 0xFFFF
)

// pageWriter appends pages to the file sequentially.
type pageWriter struct {
	w        *bufio.Writer
	pageSize int
	next     uint64 // id of the next page
	buf      []byte
}

// emitFreelist writes an empty freelist page.
func (pw *pageWriter) emitFreelist() error {
	buf := make([]byte, pw.pageSize)
	binary.NativeEndian.PutUint64(buf[0:], pw.next)
	binary.NativeEndian.PutUint16(buf[8:], freelistPageFlag) // count 0: no free pages
	return pw.emit(buf)
}

func (pw *pageWriter) emit(b []byte) error {
	_, err := pw.w.Write(b)
	pw.next += uint64(len(b) / pw.pageSize)
	return err
}

// treeBuilder builds one B+tree (a bucket) from elements added in key order.
type treeBuilder struct {
	pw     *pageWriter
	levels []*pageBuilder // 0: leaves, then branches
}

// pageBuilder accumulates the elements of the page being filled at one level.
type pageBuilder struct {
	branch bool
	elems  []pageElem
	data   []byte
	first  []byte // first key of the page being filled
}

type pageElem struct {
	flags, ksize, vsize uint32
	pgid                uint64
}

func (tb *treeBuilder) add(key, val []byte, flags uint32) error {
	if len(tb.levels) == 0 {
		tb.levels = append(tb.levels, &pageBuilder{})
	}
	return tb.addAt(0, key, val, flags, 0)
}

func (tb *treeBuilder) addAt(level int, key, val []byte, flags uint32, pgid uint64) error {
	pb := tb.levels[level]
	size := pageHeaderSize + pageElemSize*(len(pb.elems)+1) + len(pb.data) + len(key) + len(val)
	if len(pb.elems) > 0 && (size > tb.pw.pageSize || len(pb.elems) == maxElemsPerPage) {
		if err := tb.flush(level); err != nil {
			return err
		}
	}
	if len(pb.elems) == 0 {
		pb.first = append(pb.first[:0], key...)
	}
	pb.elems = append(pb.elems, pageElem{flags: flags, ksize: uint32(len(key)), vsize: uint32(len(val)), pgid: pgid})
	pb.data = append(pb.data, key...)
	pb.data = append(pb.data, val...)
	return nil
}

// flush writes the page being filled at level and adds it to the level above.
func (tb *treeBuilder) flush(level int) error {
	pb := tb.levels[level]
	pw := tb.pw
	n := len(pb.elems)
	size := pageHeaderSize + pageElemSize*n + len(pb.data)
	npages := max((size+pw.pageSize-1)/pw.pageSize, 1)
	buf := slices.Grow(pw.buf[:0], npages*pw.pageSize)[:npages*pw.pageSize]
	clear(buf)
	pw.buf = buf
	id := pw.next
	binary.NativeEndian.PutUint64(buf[0:], id)
	flags := uint16(leafPageFlag)
	if pb.branch {
		flags = branchPageFlag
	}
	binary.NativeEndian.PutUint16(buf[8:], flags)
	binary.NativeEndian.PutUint16(buf[10:], uint16(n))
	binary.NativeEndian.PutUint32(buf[12:], uint32(npages-1))
	dataAt := pageHeaderSize + pageElemSize*n
	copy(buf[dataAt:], pb.data)
	for i, e := range pb.elems {
		el := buf[pageHeaderSize+pageElemSize*i:]
		pos := uint32(dataAt - (pageHeaderSize + pageElemSize*i))
		if pb.branch {
			binary.NativeEndian.PutUint32(el[0:], pos)
			binary.NativeEndian.PutUint32(el[4:], e.ksize)
			binary.NativeEndian.PutUint64(el[8:], e.pgid)
		} else {
			binary.NativeEndian.PutUint32(el[0:], e.flags)
			binary.NativeEndian.PutUint32(el[4:], pos)
			binary.NativeEndian.PutUint32(el[8:], e.ksize)
			binary.NativeEndian.PutUint32(el[12:], e.vsize)
		}
		dataAt += int(e.ksize + e.vsize)
	}
	if err := pw.emit(buf); err != nil {
		return err
	}
	if level+1 == len(tb.levels) {
		tb.levels = append(tb.levels, &pageBuilder{branch: true})
	}
	first := pb.first
	pb.elems, pb.data = pb.elems[:0], pb.data[:0]
	return tb.addAt(level+1, first, nil, 0, id)
}

// finish flushes every level and returns the root page's id. An empty tree
// is one empty leaf page.
func (tb *treeBuilder) finish() (uint64, error) {
	if len(tb.levels) == 0 {
		tb.levels = append(tb.levels, &pageBuilder{})
	}
	for level := 0; ; level++ {
		pb := tb.levels[level]
		if level == len(tb.levels)-1 && (level > 0 && len(pb.elems) == 1) {
			return pb.elems[0].pgid, nil // a single page below: it is the root
		}
		if level == len(tb.levels)-1 && level == 0 && len(pb.elems) == 0 {
			// empty tree: write one empty leaf
			id := tb.pw.next
			if err := tb.flushEmpty(); err != nil {
				return 0, err
			}
			return id, nil
		}
		if len(pb.elems) > 0 {
			if err := tb.flush(level); err != nil {
				return 0, err
			}
		}
	}
}

func (tb *treeBuilder) flushEmpty() error {
	buf := make([]byte, tb.pw.pageSize)
	binary.NativeEndian.PutUint64(buf[0:], tb.pw.next)
	binary.NativeEndian.PutUint16(buf[8:], leafPageFlag)
	return tb.pw.emit(buf)
}
