package pagewriter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/compactkv/compactkv/internal/boltfmt"
)

// writePages writes the contents data hands over into a new bbolt file at
// path with pages of ps bytes, without going through bbolt's transactions:
// pages 0 and 1 are left for the meta pages, then come each bucket's tree
// (leaves, then the branches above them, as they fill), the root bucket's
// tree, the freelist page, and last the meta pages.
func writePages(path string, ps int, data Data) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	pw := newPageWriter(f, ps)
	defer func() {
		if ferr := pw.finish(); err == nil {
			err = ferr
		}
	}()
	if _, err := pw.alloc(2 * pw.pageSize); err != nil { // the meta pages, written last
		return err
	}
	pf := &pageFile{pw: pw, root: &treeBuilder{pw: pw}}
	if err := data(pf); err != nil {
		return err
	}
	if err := pf.finishBucket(); err != nil {
		return err
	}
	rootPg, err := pf.root.finish()
	if err != nil {
		return err
	}
	freelistPg := pw.next
	if err := pw.emitFreelist(); err != nil {
		return err
	}
	if err := pw.finish(); err != nil {
		return err
	}
	_, err = f.WriteAt(metaPages(ps, rootPg, freelistPg, pw.next), 0)
	return err
}

// metaPages returns meta pages 0 and 1 (transaction IDs 0 and 1) of a file
// whose root bucket's root page is root, freelist page freelist and high
// water mark hwm.
func metaPages(ps int, root, freelist, hwm uint64) []byte {
	metas := make([]byte, 2*ps)
	for i := range uint64(2) {
		boltfmt.PutMeta(metas[i*uint64(ps):], i, boltfmt.Meta{Magic: boltfmt.Magic, Version: boltfmt.Version,
			PageSize: uint32(ps), Root: root, Freelist: freelist, HWM: hwm, TxID: i})
	}
	return metas
}

// pageFile is the Writer of writePages.
type pageFile struct {
	pw   *pageWriter
	root *treeBuilder // the root bucket: one entry per bucket
	data *treeBuilder // the bucket being written; nil before the first
	name []byte       // its name
}

func (pf *pageFile) Bucket(name []byte) error {
	if len(name) == 0 {
		return fmt.Errorf("pagewriter: bucket: %w", berrors.ErrBucketNameRequired)
	}
	if pf.data != nil && bytes.Compare(name, pf.name) <= 0 {
		return fmt.Errorf("%w: bucket %q after %q", ErrUnsorted, name, pf.name)
	}
	if err := pf.finishBucket(); err != nil {
		return err
	}
	pf.data, pf.name = &treeBuilder{pw: pf.pw}, append(pf.name[:0], name...)
	return nil
}

// Put leaves the order of keys to the self-check (boltcheck checks it on
// every page): checking it here, on memory the sorter's output scatters,
// costs a restore several percent.
func (pf *pageFile) Put(key, val []byte) error {
	switch {
	case pf.data == nil:
		return fmt.Errorf("pagewriter: Put before Bucket")
	case len(key) == 0:
		return fmt.Errorf("pagewriter: bucket %q: %w", pf.name, berrors.ErrKeyRequired)
	case len(key) > bolt.MaxKeySize:
		return fmt.Errorf("pagewriter: bucket %q: %w", pf.name, berrors.ErrKeyTooLarge)
	case int64(len(val)) > bolt.MaxValueSize:
		return fmt.Errorf("pagewriter: bucket %q: %w", pf.name, berrors.ErrValueTooLarge)
	}
	return pf.data.add(key, val, 0)
}

// finishBucket writes what is left of the bucket being written and adds it
// to the root bucket.
func (pf *pageFile) finishBucket() error {
	if pf.data == nil {
		return nil
	}
	pg, err := pf.data.finish()
	if err != nil {
		return err
	}
	var v [16]byte // bbolt InBucket: root pgid, sequence
	binary.NativeEndian.PutUint64(v[:], pg)
	pf.data = nil
	return pf.root.add(pf.name, v[:], boltfmt.BucketLeaf)
}

// emitFreelist writes an empty freelist page.
func (pw *pageWriter) emitFreelist() error {
	id := pw.next
	buf, err := pw.alloc(pw.pageSize)
	if err != nil {
		return err
	}
	binary.NativeEndian.PutUint64(buf[0:], id)
	binary.NativeEndian.PutUint16(buf[8:], boltfmt.FreelistPage) // count 0: no free pages
	return nil
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

// addAt adds an element to the page being filled at level, after writing
// that page out if the element does not fit in it. A leaf page is written
// out with one element or more, a branch page only with two or more (it
// takes overflow pages when two keys do not fit in a page, as bbolt's do):
// with one, a level of keys longer than half a page would never shrink and
// the tree would grow without end.
func (tb *treeBuilder) addAt(level int, key, val []byte, flags uint32, pgid uint64) error {
	pb := tb.levels[level]
	size := boltfmt.PageHeaderSize + boltfmt.ElemSize*(len(pb.elems)+1) + len(pb.data) + len(key) + len(val)
	minElems := 1
	if pb.branch {
		minElems = 2
	}
	if len(pb.elems) >= minElems && (size > tb.pw.pageSize || len(pb.elems) == boltfmt.MaxElems) {
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
	size := boltfmt.PageHeaderSize + boltfmt.ElemSize*n + len(pb.data)
	npages := max((size+pw.pageSize-1)/pw.pageSize, 1)
	id := pw.next
	buf, err := pw.alloc(npages * pw.pageSize) // laid out in place, zeroed
	if err != nil {
		return err
	}
	binary.NativeEndian.PutUint64(buf[0:], id)
	flags := uint16(boltfmt.LeafPage)
	if pb.branch {
		flags = boltfmt.BranchPage
	}
	binary.NativeEndian.PutUint16(buf[8:], flags)
	binary.NativeEndian.PutUint16(buf[10:], uint16(n))
	binary.NativeEndian.PutUint32(buf[12:], uint32(npages-1))
	dataAt := boltfmt.PageHeaderSize + boltfmt.ElemSize*n
	copy(buf[dataAt:], pb.data)
	for i, e := range pb.elems {
		el := buf[boltfmt.PageHeaderSize+boltfmt.ElemSize*i:]
		pos := uint32(dataAt - (boltfmt.PageHeaderSize + boltfmt.ElemSize*i))
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
	id := tb.pw.next
	buf, err := tb.pw.alloc(tb.pw.pageSize)
	if err != nil {
		return err
	}
	binary.NativeEndian.PutUint64(buf[0:], id)
	binary.NativeEndian.PutUint16(buf[8:], boltfmt.LeafPage)
	return nil
}
