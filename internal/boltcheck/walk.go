package boltcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/compactkv/compactkv/internal/boltfmt"
)

// markSeen records that page id (with its overflow pages) is in use.
func (c *checker) markSeen(id uint64, p []byte) error {
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
func (c *checker) walkBucket(root uint64, depth int) error {
	return c.walkPage(root, nil, nil, depth)
}

// walkPage checks page id and the pages below it; every key in them must be
// at least lo and below hi (nil: no bound).
func (c *checker) walkPage(id uint64, lo, hi []byte, depth int) error {
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
	if binary.NativeEndian.Uint16(p[8:]) == boltfmt.LeafPage {
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
	if boltfmt.PageHeaderSize+boltfmt.ElemSize*n > len(p) {
		return damaged("page %d: %d elements do not fit in %d bytes", id, n, len(p))
	}
	keys := make([][]byte, n)
	kids := make([]uint64, n)
	for i := range n {
		at := boltfmt.PageHeaderSize + boltfmt.ElemSize*i
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
		if err := keyInOrder(id, i, i == n-1, keys[i], prev, lo, hi); err != nil {
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
// above the one before it, prev, and the last (so every one, since they
// rise) below hi.
func keyInOrder(id uint64, i int, last bool, key, prev, lo, hi []byte) error {
	switch {
	case i == 0 && lo != nil && bytes.Compare(key, lo) < 0:
		return damaged("page %d: first key %s below its parent's %s", id, hexKey(key), hexKey(lo))
	case i > 0 && bytes.Compare(key, prev) <= 0:
		return damaged("page %d: key %d (%s) not above key %d (%s)", id, i, hexKey(key), i-1, hexKey(prev))
	case last && hi != nil && bytes.Compare(key, hi) >= 0:
		return damaged("page %d: key %d (%s) not below the next key of its parent (%s)", id, i, hexKey(key), hexKey(hi))
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
func (c *checker) checkLeaf(id uint64, p, lo, hi []byte, nested bool) error {
	ne := binary.NativeEndian
	n := int(ne.Uint16(p[10:]))
	if boltfmt.PageHeaderSize+boltfmt.ElemSize*n > len(p) {
		return damaged("page %d: %d elements do not fit in %d bytes", id, n, len(p))
	}
	var prev []byte
	for i := range n {
		at := boltfmt.PageHeaderSize + boltfmt.ElemSize*i
		el := p[at:]
		flags, pos := ne.Uint32(el[0:]), uint64(ne.Uint32(el[4:]))
		ksize, vsize := uint64(ne.Uint32(el[8:])), uint64(ne.Uint32(el[12:]))
		start := uint64(at) + pos
		if ksize == 0 || start+ksize+vsize > uint64(len(p)) {
			return damaged("page %d: element %d: key and value [%d, %d) outside the page's %d bytes", id, i, start, start+ksize+vsize, len(p))
		}
		key := p[start : start+ksize]
		if err := keyInOrder(id, i, i == n-1, key, prev, lo, hi); err != nil {
			return err
		}
		prev = key
		switch {
		case flags == 0:
			continue
		case flags != boltfmt.BucketLeaf || !nested:
			return damaged("page %d: element %d: flags %#x", id, i, flags)
		}
		val := p[start+ksize : start+ksize+vsize]
		if len(val) < boltfmt.BucketHeaderSize {
			return damaged("page %d: bucket %s: a %d-byte header", id, hexKey(key), len(val))
		}
		root := ne.Uint64(val)
		if root != 0 {
			c.buckets = append(c.buckets, root)
			continue
		}
		inl := val[boltfmt.BucketHeaderSize:]
		if len(inl) < boltfmt.PageHeaderSize || ne.Uint16(inl[8:]) != boltfmt.LeafPage {
			return damaged("page %d: bucket %s: inline page is not a leaf", id, hexKey(key))
		}
		if err := c.checkLeaf(id, inl, nil, nil, false); err != nil {
			var d *damage
			if errors.As(err, &d) {
				return damaged("bucket %s inline: %s", hexKey(key), d.msg)
			}
			return err
		}
	}
	return nil
}

// bitset is a set of page IDs below a bound.
type bitset []uint64

func newBitset(n uint64) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) set(i uint64)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
