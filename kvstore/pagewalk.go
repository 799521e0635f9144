package kvstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unsafe"

	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/internal/boltfmt"
)

// A Get finds its key by walking the bucket's B+tree in the read
// snapshot's memory map itself (internal/boltfmt's layout, the one the
// page writer writes and the file check reads) rather than through
// bbolt's Bucket.Get: that allocates a cursor and grows its stack, boxes
// two page IDs per page for an assertion whose message it never formats
// (Page.FastCheck), and counts cursors with an atomic add on the shared
// transaction's stats, a cache line both cores then write. The walk makes
// the checks bbolt makes (the page's own ID, its type) and more (every
// element inside its page, no tree deeper than maxDepth), and reports what
// fails as errDamaged. Inline buckets (small enough to live in their
// parent's value) still go through bbolt.

// maxDepth bounds the walk: a bbolt tree of 2^64 keys is far shallower, so
// a deeper one loops through damaged pages.
const maxDepth = 64

// pageMap is the part of a read snapshot's memory map its transaction can
// reach: pages below the transaction's high water mark.
type pageMap struct {
	data     []byte
	pageSize uint64
}

// mapOf returns tx's pages in db's memory map. tx keeps the map in place
// (bbolt remaps only once every read transaction has ended).
func mapOf(db *bolt.DB, tx *bolt.Tx) pageMap {
	info := db.Info()
	base := *(*unsafe.Pointer)(unsafe.Pointer(&info.Data)) // the map: not Go memory
	return pageMap{data: unsafe.Slice((*byte)(base), tx.Size()), pageSize: uint64(info.PageSize)}
}

// holds says whether the panic x is a fault reading m's memory (a file
// cut short under the map, or a damaged disk), not elsewhere.
func (m pageMap) holds(x any) bool {
	f, ok := x.(interface{ Addr() uintptr })
	if !ok || len(m.data) == 0 {
		return false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(m.data)))
	return f.Addr() >= base && f.Addr() < base+uintptr(len(m.data))
}

// get returns key's value in the tree whose root page is root (nil if
// key is not there, or holds a nested bucket, as bbolt's Get). The value
// is the map's bytes.
func (m pageMap) get(root uint64, key []byte) ([]byte, error) {
	ne := binary.NativeEndian
	id := root
	for range maxDepth {
		pg, err := m.page(id)
		if err != nil {
			return nil, err
		}
		flags, n := ne.Uint16(pg[8:]), int(ne.Uint16(pg[10:]))
		if boltfmt.PageHeaderSize+n*boltfmt.ElemSize > len(pg) {
			return nil, damagef("page %d: %d elements overrun its %d bytes", id, n, len(pg))
		}
		switch flags {
		case boltfmt.BranchPage:
			if n == 0 {
				return nil, damagef("page %d: a branch page without elements", id)
			}
			// The last element whose key is at most key (the first if none
			// is): its child holds every key from its own up to the next's.
			lo, hi := 0, n // invariant: keys below lo are < key, keys at hi and above are >= key
			exact := false
			for lo < hi {
				i := int(uint(lo+hi) >> 1)
				k, _, err := elemKey(pg, id, i, false)
				if err != nil {
					return nil, err
				}
				c := bytes.Compare(k, key)
				if c == 0 {
					lo, exact = i, true
					break
				}
				if c < 0 {
					lo = i + 1
				} else {
					hi = i
				}
			}
			if !exact && lo > 0 {
				lo--
			}
			id = ne.Uint64(pg[boltfmt.PageHeaderSize+lo*boltfmt.ElemSize+8:])
		case boltfmt.LeafPage:
			lo, hi := 0, n
			for lo < hi {
				i := int(uint(lo+hi) >> 1)
				k, v, err := elemKey(pg, id, i, true)
				if err != nil {
					return nil, err
				}
				c := bytes.Compare(k, key)
				if c == 0 {
					if ne.Uint32(pg[boltfmt.PageHeaderSize+i*boltfmt.ElemSize:])&boltfmt.BucketLeaf != 0 {
						return nil, nil // a nested bucket, not a value
					}
					return v, nil
				}
				if c < 0 {
					lo = i + 1
				} else {
					hi = i
				}
			}
			return nil, nil
		default:
			return nil, damagef("page %d: type %#x where a branch or leaf page belongs", id, flags)
		}
	}
	return nil, damagef("tree deeper than %d pages from root page %d", maxDepth, root)
}

// page returns page id with its overflow pages, checked to be within the
// transaction's pages and to carry its own ID.
func (m pageMap) page(id uint64) ([]byte, error) {
	ne := binary.NativeEndian
	n := uint64(len(m.data)) / m.pageSize
	if id < 2 || id >= n { // 0 and 1 are the meta pages
		return nil, damagef("page %d: outside the file's pages 2 to %d", id, n-1)
	}
	off := id * m.pageSize
	hdr := m.data[off : off+boltfmt.PageHeaderSize]
	if got := ne.Uint64(hdr); got != id {
		return nil, damagef("page %d: its header says page %d", id, got)
	}
	over := uint64(ne.Uint32(hdr[12:]))
	if over >= n-id {
		return nil, damagef("page %d: %d overflow pages run past the file's %d pages", id, over, n)
	}
	return m.data[off : off+(over+1)*m.pageSize], nil
}

// elemKey returns element i's key (and value, for a leaf) in page pg,
// checked to lie inside it.
func elemKey(pg []byte, id uint64, i int, leaf bool) (k, v []byte, err error) {
	ne := binary.NativeEndian
	e := boltfmt.PageHeaderSize + i*boltfmt.ElemSize
	var pos, ksize, vsize uint64
	if leaf {
		pos, ksize, vsize = uint64(ne.Uint32(pg[e+4:])), uint64(ne.Uint32(pg[e+8:])), uint64(ne.Uint32(pg[e+12:]))
	} else {
		pos, ksize = uint64(ne.Uint32(pg[e:])), uint64(ne.Uint32(pg[e+4:]))
	}
	start := uint64(e) + pos
	if end := start + ksize + vsize; end > uint64(len(pg)) {
		return nil, nil, damagef("page %d: element %d runs past the page", id, i)
	}
	return pg[start : start+ksize], pg[start+ksize : start+ksize+vsize], nil
}

func damagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errDamaged, fmt.Sprintf(format, args...))
}
