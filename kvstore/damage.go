package kvstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// errDamaged marks a cache file whose pages break what bbolt takes for
// granted. bbolt checks a file's meta pages when it opens it and nothing
// else: a page of the wrong type, an element pointing outside its page or a
// branch pointing back up its own tree makes it panic, or fault, when a read
// or a write reaches that page, sometimes on a goroutine of its own where no
// recover can reach. The store never lets bbolt near such a file: Open checks
// the whole file first (checkFile) and rebuilds it from the topic if it is
// damaged, and damage that appears while the store runs turns into this
// error (safeView, safeUpdate).
var errDamaged = errors.New("damaged cache file")

// safeView is db.View that returns a panic of bbolt (or a fault reading its
// memory map) inside the transaction as an error wrapping errDamaged, rather
// than letting it take the process down. The file was checked when it was
// opened, so such a panic means it changed under the store.
func safeView(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverDamage(&err)
	return db.View(fn)
}

// safeUpdate is db.Update as safeView is db.View. bbolt rolls the
// transaction back before the panic reaches here, so nothing of it is
// committed.
func safeUpdate(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverDamage(&err)
	return db.Update(fn)
}

func recoverDamage(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: bbolt: %v", errDamaged, r)
	}
}

// bbolt's on-disk format beyond what the page writer (bulk.go) needs.
const (
	freelistPageFlag = 0x10
	noFreelist       = ^uint64(0) // meta.freelist of a file without a freelist page
	metaSize         = 64         // magic .. checksum
	bucketHeaderSize = 16         // InBucket: root pgid, sequence
	minPageSize      = 1 << 10
	maxPageSize      = 1 << 24 // the largest bbolt looks for
	maxTreeDepth     = 64      // pages from the root bucket down, across nested buckets
	checkReadAhead   = 1 << 20 // bytes read at once while pages come in file order
)

// boltMeta is a meta page as bbolt reads it.
type boltMeta struct {
	pageSize uint64
	root     uint64 // the root bucket's root page
	freelist uint64 // noFreelist: none
	hwm      uint64 // pages below this are in use
	txid     uint64
}

// checkFile reads the bbolt file at path itself, without bbolt, and returns
// an error wrapping errDamaged if anything bbolt would trip over is wrong. It
// checks what tx.Check checks and more:
//
//   - both meta pages: page header, magic, version, checksum, the same page
//     size; the file holds every page below the high water mark of the one
//     bbolt uses (the one with the higher transaction ID);
//   - the freelist page, if there is one: its type and every page ID in it;
//   - every page reachable from the root bucket, through nested buckets and
//     inline buckets: its ID, its type (branch or leaf), that it and its
//     overflow pages are below the high water mark, free of the freelist and
//     reached only once (no cycles); that every element, key and value lies
//     inside its page, keys are non-empty and in order within the page and
//     within the bounds its parent sets, bucket entries are well formed.
//
// Unlike tx.Check it lets a page that is neither reachable nor free pass: a
// leak wastes space but trips nothing, and bbolt itself leaves such pages
// behind at times (DeleteBucket of a bucket changed in the same
// transaction). It cannot see damage inside a key or value that keeps the
// order intact: bbolt's format has no checksums on data pages.
//
// It reads the pages through a read-only memory map where it can (no copies,
// no system call per page) and with plain reads elsewhere; a fault on the
// map (the file shrank meanwhile) is an error too.
func checkFile(path string) error { return checkFileWith(path, true) }

// checkFileWith is checkFile; mapped false makes it read the file even where
// it could map it (for tests).
func checkFileWith(path string, mapped bool) (err error) {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	c := &fileChecker{f: f, size: fi.Size()}
	if mapped {
		data, unmap := mapFile(f, c.size)
		defer unmap()
		c.data = data
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = damaged("reading the file: %v", r)
		}
	}()
	return c.check()
}

type fileChecker struct {
	f    *os.File
	size int64
	m    boltMeta
	ps   uint64

	free, seen bitset
	synced     bool // the file has a freelist page

	data []byte // the file, memory-mapped; nil: read it

	win     []byte // without data: pages [winID, winID+len(win)/ps)
	winID   uint64
	next    uint64   // the page after the last one read
	seqRun  int      // pages read in file order in a row
	branch  [][]byte // without data: per depth, a copy of the branch page being walked
	buckets []uint64 // root pages of the buckets of the leaf being checked
}

func damaged(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errDamaged}, args...)...)
}

func (c *fileChecker) check() error {
	if err := c.readMetas(); err != nil {
		return err
	}
	c.seen = newBitset(c.m.hwm)
	c.free = newBitset(c.m.hwm)
	c.seen.set(0)
	c.seen.set(1)
	if c.synced {
		if err := c.readFreelist(); err != nil {
			return err
		}
	}
	return c.walkBucket(c.m.root, 0)
}

// readMetas reads both meta pages and picks the one bbolt uses.
func (c *fileChecker) readMetas() error {
	var ms [2]boltMeta
	var ps uint64
	for i := range uint64(2) {
		m, err := c.readMeta(i, ps)
		if err != nil {
			return err
		}
		ms[i], ps = m, m.pageSize
	}
	c.m = ms[0]
	if ms[1].txid > ms[0].txid {
		c.m = ms[1]
	}
	c.ps = c.m.pageSize
	if need := c.m.hwm * c.ps; c.m.hwm > uint64(c.size)/c.ps {
		return damaged("file is %d bytes, its meta page needs %d (truncated)", c.size, need)
	}
	if c.m.root < 2 || c.m.root >= c.m.hwm {
		return damaged("root page %d outside [2, %d)", c.m.root, c.m.hwm)
	}
	c.synced = c.m.freelist != noFreelist
	if c.synced && (c.m.freelist < 2 || c.m.freelist >= c.m.hwm) {
		return damaged("freelist page %d outside [2, %d)", c.m.freelist, c.m.hwm)
	}
	return nil
}

// readMeta reads meta page id; ps is the page size meta page 0 gave (0 when
// reading page 0).
func (c *fileChecker) readMeta(id, ps uint64) (boltMeta, error) {
	var b [pageHeaderSize + metaSize]byte
	if _, err := c.f.ReadAt(b[:], int64(id*ps)); err != nil {
		if errors.Is(err, io.EOF) {
			return boltMeta{}, damaged("meta page %d: file is %d bytes (truncated)", id, c.size)
		}
		return boltMeta{}, err
	}
	ne := binary.NativeEndian
	m := b[pageHeaderSize:]
	if pid, fl := ne.Uint64(b[0:]), ne.Uint16(b[8:]); pid != id || fl != metaPageFlag {
		return boltMeta{}, damaged("meta page %d: header says page %d with flags %#x", id, pid, fl)
	}
	if magic := ne.Uint32(m[0:]); magic != boltMagic {
		return boltMeta{}, damaged("meta page %d: magic %#x, want %#x", id, magic, boltMagic)
	}
	if v := ne.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, damaged("meta page %d: bbolt format version %d, want %d", id, v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if sum := ne.Uint64(m[56:]); sum != h.Sum64() {
		return boltMeta{}, damaged("meta page %d: checksum mismatch", id)
	}
	meta := boltMeta{
		pageSize: uint64(ne.Uint32(m[8:])),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		hwm:      ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}
	switch {
	case meta.pageSize < minPageSize || meta.pageSize > maxPageSize || meta.pageSize&(meta.pageSize-1) != 0:
		return boltMeta{}, damaged("meta page %d: page size %d", id, meta.pageSize)
	case ps != 0 && meta.pageSize != ps:
		return boltMeta{}, damaged("meta pages disagree on the page size: %d and %d", ps, meta.pageSize)
	}
	return meta, nil
}

// readFreelist reads the freelist page and marks the pages it lists free.
func (c *fileChecker) readFreelist() error {
	id := c.m.freelist
	p, err := c.page(id, freelistPageFlag)
	if err != nil {
		return err
	}
	if err := c.markSeen(id, p); err != nil {
		return err
	}
	ne := binary.NativeEndian
	n, at := uint64(ne.Uint16(p[10:])), uint64(pageHeaderSize)
	if n == 0xFFFF { // the count is the first element
		if len(p) < pageHeaderSize+8 {
			return damaged("freelist page %d: no room for its count", id)
		}
		n, at = ne.Uint64(p[pageHeaderSize:]), pageHeaderSize+8
	}
	if n > (uint64(len(p))-at)/8 {
		return damaged("freelist page %d: %d IDs do not fit in %d bytes", id, n, len(p))
	}
	for i := range n {
		fid := ne.Uint64(p[at+8*i:])
		switch {
		case fid < 2 || fid >= c.m.hwm:
			return damaged("freelist page %d: free page %d outside [2, %d)", id, fid, c.m.hwm)
		case c.free.has(fid):
			return damaged("freelist page %d: page %d freed twice", id, fid)
		case c.seen.has(fid):
			return damaged("freelist page %d: lists itself as free", id)
		}
		c.free.set(fid)
	}
	return nil
}

// page reads page id with its overflow pages, checking its header: the ID it
// gives itself, its type (want, or else branch or leaf), its extent. Without
// the memory map the bytes are valid until the next read.
func (c *fileChecker) page(id uint64, want uint16) ([]byte, error) {
	if id < 2 || id >= c.m.hwm {
		return nil, damaged("page %d outside [2, %d)", id, c.m.hwm)
	}
	p, err := c.read(id, 1)
	if err != nil {
		return nil, err
	}
	ne := binary.NativeEndian
	pid, fl, over := ne.Uint64(p[0:]), ne.Uint16(p[8:]), uint64(ne.Uint32(p[12:]))
	switch {
	case pid != id:
		return nil, damaged("page %d: header says page %d", id, pid)
	case want != 0 && fl != want:
		return nil, damaged("page %d: flags %#x, want %#x", id, fl, want)
	case want == 0 && fl != branchPageFlag && fl != leafPageFlag:
		return nil, damaged("page %d: flags %#x, want a branch (%#x) or leaf (%#x) page", id, fl, branchPageFlag, leafPageFlag)
	case over >= c.m.hwm-id:
		return nil, damaged("page %d: %d overflow pages run past the high water mark %d", id, over, c.m.hwm)
	}
	if over == 0 {
		return p, nil
	}
	return c.read(id, 1+over)
}

// read returns pages [id, id+n), which lie below the high water mark: a
// slice of the memory map, or else of the read-ahead window, refilled when
// they are not in it. Without the map, pages read in file order (the leaves
// of a bulk load) are read ahead, twice as many each time up to
// checkReadAhead bytes, others one by one.
func (c *fileChecker) read(id, n uint64) ([]byte, error) {
	if c.data != nil {
		return c.data[id*c.ps : (id+n)*c.ps], nil
	}
	defer func() { c.next = id + n }()
	inWin := uint64(len(c.win)) / c.ps
	if id >= c.winID && id+n <= c.winID+inWin {
		off := (id - c.winID) * c.ps
		return c.win[off : off+n*c.ps], nil
	}
	cnt := n
	if id == c.next {
		c.seqRun = min(c.seqRun+1, 30)
		cnt = max(n, min(uint64(1)<<c.seqRun, checkReadAhead/c.ps))
	} else {
		c.seqRun = 0
	}
	cnt = min(cnt, c.m.hwm-id)
	c.win = growTo(c.win, int(cnt*c.ps))
	c.winID = id
	if _, err := c.f.ReadAt(c.win, int64(id*c.ps)); err != nil {
		c.win = c.win[:0]
		if errors.Is(err, io.EOF) {
			return nil, damaged("page %d: file is %d bytes (truncated)", id, c.size)
		}
		return nil, err
	}
	return c.win[:n*c.ps], nil
}

func growTo(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// markSeen records that page id (with its overflow pages) is in use.
func (c *fileChecker) markSeen(id uint64, p []byte) error {
	for i := range uint64(len(p)) / c.ps {
		switch {
		case c.seen.has(id + i):
			return damaged("page %d: reached twice", id+i)
		case c.free.has(id + i):
			return damaged("page %d: reachable but free", id+i)
		}
		c.seen.set(id + i)
	}
	return nil
}

// walkBucket checks the tree of the bucket whose root page is root.
func (c *fileChecker) walkBucket(root uint64, depth int) error {
	return c.walkPage(root, nil, nil, depth)
}

// walkPage checks page id and the pages below it; every key in them must be
// at least lo and below hi (nil: no bound).
func (c *fileChecker) walkPage(id uint64, lo, hi []byte, depth int) error {
	if depth > maxTreeDepth {
		return damaged("page %d: more than %d levels deep", id, maxTreeDepth)
	}
	p, err := c.page(id, 0)
	if err != nil {
		return err
	}
	if err := c.markSeen(id, p); err != nil {
		return err
	}
	if binary.NativeEndian.Uint16(p[8:]) == leafPageFlag {
		c.buckets = c.buckets[:0]
		if err := c.checkLeaf(id, p, lo, hi, true); err != nil {
			return err
		}
		roots := append([]uint64(nil), c.buckets...)
		for _, r := range roots {
			if err := c.walkBucket(r, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if c.data == nil { // keep a copy of the branch page: the reads below reuse the window
		for len(c.branch) <= depth {
			c.branch = append(c.branch, nil)
		}
		c.branch[depth] = append(c.branch[depth][:0], p...)
		p = c.branch[depth]
	}
	n := int(binary.NativeEndian.Uint16(p[10:]))
	if n == 0 {
		return damaged("page %d: a branch page without elements", id)
	}
	if pageHeaderSize+pageElemSize*n > len(p) {
		return damaged("page %d: %d elements do not fit in %d bytes", id, n, len(p))
	}
	keys := make([][]byte, n)
	kids := make([]uint64, n)
	for i := range n {
		at := pageHeaderSize + pageElemSize*i
		el := p[at:]
		pos, ksize := uint64(binary.NativeEndian.Uint32(el[0:])), uint64(binary.NativeEndian.Uint32(el[4:]))
		kids[i] = binary.NativeEndian.Uint64(el[8:])
		start := uint64(at) + pos
		if ksize == 0 || start+ksize > uint64(len(p)) {
			return damaged("page %d: element %d: key [%d, %d) outside the page's %d bytes", id, i, start, start+ksize, len(p))
		}
		keys[i] = p[start : start+ksize]
		var prev []byte
		if i > 0 {
			prev = keys[i-1]
		}
		if err := keyInOrder(id, i, keys[i], prev, lo, hi); err != nil {
			return err
		}
	}
	for i := range n {
		next := hi
		if i+1 < n {
			next = keys[i+1]
		}
		if err := c.walkPage(kids[i], keys[i], next, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// keyInOrder checks key i of page id: the first at least lo, every one
// below hi and above the one before it, prev.
func keyInOrder(id uint64, i int, key, prev, lo, hi []byte) error {
	switch {
	case i == 0 && lo != nil && bytes.Compare(key, lo) < 0:
		return damaged("page %d: first key %s below its parent's %s", id, hexKey(key), hexKey(lo))
	case hi != nil && bytes.Compare(key, hi) >= 0:
		return damaged("page %d: key %d (%s) not below the next key of its parent (%s)", id, i, hexKey(key), hexKey(hi))
	case i > 0 && bytes.Compare(key, prev) <= 0:
		return damaged("page %d: key %d (%s) not above key %d (%s)", id, i, hexKey(key), i-1, hexKey(prev))
	}
	return nil
}

// hexKey shows a key in an error: hex, at most 32 bytes of it.
func hexKey(k []byte) string {
	if len(k) > 32 {
		return fmt.Sprintf("%x... (%d bytes)", k[:32], len(k))
	}
	return fmt.Sprintf("%x", k)
}

// checkLeaf checks the elements of leaf page p (page id, 0 for an inline
// bucket's page) and collects the root pages of its buckets in c.buckets;
// nested says whether it may hold buckets (inline buckets may not).
func (c *fileChecker) checkLeaf(id uint64, p, lo, hi []byte, nested bool) error {
	ne := binary.NativeEndian
	n := int(ne.Uint16(p[10:]))
	if pageHeaderSize+pageElemSize*n > len(p) {
		return damaged("page %d: %d elements do not fit in %d bytes", id, n, len(p))
	}
	var prev []byte
	for i := range n {
		at := pageHeaderSize + pageElemSize*i
		el := p[at:]
		flags, pos := ne.Uint32(el[0:]), uint64(ne.Uint32(el[4:]))
		ksize, vsize := uint64(ne.Uint32(el[8:])), uint64(ne.Uint32(el[12:]))
		start := uint64(at) + pos
		if ksize == 0 || start+ksize+vsize > uint64(len(p)) {
			return damaged("page %d: element %d: key and value [%d, %d) outside the page's %d bytes", id, i, start, start+ksize+vsize, len(p))
		}
		key := p[start : start+ksize]
		if err := keyInOrder(id, i, key, prev, lo, hi); err != nil {
			return err
		}
		prev = key
		switch {
		case flags == 0:
			continue
		case flags != bucketLeafFlag || !nested:
			return damaged("page %d: element %d: flags %#x", id, i, flags)
		}
		val := p[start+ksize : start+ksize+vsize]
		if len(val) < bucketHeaderSize {
			return damaged("page %d: bucket %s: a %d-byte header", id, hexKey(key), len(val))
		}
		root := ne.Uint64(val)
		if root != 0 {
			c.buckets = append(c.buckets, root)
			continue
		}
		inl := val[bucketHeaderSize:]
		if len(inl) < pageHeaderSize || ne.Uint16(inl[8:]) != leafPageFlag {
			return damaged("page %d: bucket %s: inline page is not a leaf", id, hexKey(key))
		}
		if err := c.checkLeaf(id, inl, nil, nil, false); err != nil {
			return fmt.Errorf("bucket %s inline: %w", hexKey(key), err)
		}
	}
	return nil
}

// bitset is a set of page IDs below a bound.
type bitset []uint64

func newBitset(n uint64) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) set(i uint64)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
