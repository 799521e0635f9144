package boltcheck

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime/debug"

	"github.com/compactkv/compactkv/internal/boltfmt"
)

const (
	minPageSize    = 1 << 10
	maxPageSize    = 1 << 24 // the largest bbolt looks for
	maxTreeDepth   = 64      // pages from the root bucket down, across nested buckets
	checkReadAhead = 1 << 20 // bytes read at once while pages come in file order
)

// Check reads the bbolt file at path and returns an error wrapping
// ErrDamaged if anything bbolt would trip over is wrong, nil if nothing is.
// It checks what bbolt's tx.Check checks and more:
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
// transaction). A fault on the memory map (the file shrank meanwhile) is
// damage too. Check is safe for concurrent use; it only reads the file.
func Check(path string) error { return check(path, true) }

// check is Check; mapped false makes it read the file even where it could
// map it (for tests).
func check(path string, mapped bool) (err error) {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	c := &checker{f: f, size: fi.Size()}
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

// meta is a meta page as bbolt reads it.
type meta struct {
	pageSize uint64
	root     uint64 // the root bucket's root page
	freelist uint64 // boltfmt.NoFreelist: none
	hwm      uint64 // pages below this are in use
	txid     uint64
}

// checker checks one file.
type checker struct {
	f    *os.File
	size int64
	m    meta
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

func (c *checker) check() error {
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
func (c *checker) readMetas() error {
	var ms [2]meta
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
	c.synced = c.m.freelist != boltfmt.NoFreelist
	if c.synced && (c.m.freelist < 2 || c.m.freelist >= c.m.hwm) {
		return damaged("freelist page %d outside [2, %d)", c.m.freelist, c.m.hwm)
	}
	return nil
}

// readMeta reads meta page id; ps is the page size meta page 0 gave (0 when
// reading page 0).
func (c *checker) readMeta(id, ps uint64) (meta, error) {
	var b [boltfmt.PageHeaderSize + boltfmt.MetaSize]byte
	if _, err := c.f.ReadAt(b[:], int64(id*ps)); err != nil {
		if errors.Is(err, io.EOF) {
			return meta{}, damaged("meta page %d: file is %d bytes (truncated)", id, c.size)
		}
		return meta{}, err
	}
	pid, fl, m, sumOK := boltfmt.ReadMeta(b[:])
	switch {
	case pid != id || fl != boltfmt.MetaPage:
		return meta{}, damaged("meta page %d: header says page %d with flags %#x", id, pid, fl)
	case m.Magic != boltfmt.Magic:
		return meta{}, damaged("meta page %d: magic %#x, want %#x", id, m.Magic, boltfmt.Magic)
	case m.Version != boltfmt.Version:
		return meta{}, damaged("meta page %d: bbolt format version %d, want %d", id, m.Version, boltfmt.Version)
	case !sumOK:
		return meta{}, damaged("meta page %d: checksum mismatch", id)
	}
	mt := meta{pageSize: uint64(m.PageSize), root: m.Root, freelist: m.Freelist, hwm: m.HWM, txid: m.TxID}
	switch {
	case mt.pageSize < minPageSize || mt.pageSize > maxPageSize || mt.pageSize&(mt.pageSize-1) != 0:
		return meta{}, damaged("meta page %d: page size %d", id, mt.pageSize)
	case ps != 0 && mt.pageSize != ps:
		return meta{}, damaged("meta pages disagree on the page size: %d and %d", ps, mt.pageSize)
	}
	return mt, nil
}

// readFreelist reads the freelist page and marks the pages it lists free.
func (c *checker) readFreelist() error {
	id := c.m.freelist
	p, err := c.page(id, boltfmt.FreelistPage)
	if err != nil {
		return err
	}
	if err := c.markSeen(id, p); err != nil {
		return err
	}
	ne := binary.NativeEndian
	n, at := uint64(ne.Uint16(p[10:])), uint64(boltfmt.PageHeaderSize)
	if n == 0xFFFF { // the count is the first element
		if len(p) < boltfmt.PageHeaderSize+8 {
			return damaged("freelist page %d: no room for its count", id)
		}
		n, at = ne.Uint64(p[boltfmt.PageHeaderSize:]), boltfmt.PageHeaderSize+8
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
func (c *checker) page(id uint64, want uint16) ([]byte, error) {
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
	case want == 0 && fl != boltfmt.BranchPage && fl != boltfmt.LeafPage:
		return nil, damaged("page %d: flags %#x, want a branch (%#x) or leaf (%#x) page", id, fl, boltfmt.BranchPage, boltfmt.LeafPage)
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
func (c *checker) read(id, n uint64) ([]byte, error) {
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
