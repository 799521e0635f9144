// Package boltfmt is bbolt's on-disk format, as far as compactkv reads and
// writes bbolt files without bbolt: the page writer (internal/pagewriter)
// and the file checker (internal/boltcheck) both take it from here.
//
// It is the layout of bbolt v1.4 (go.etcd.io/bbolt/internal/common, file
// format version 2), in the host's byte order as bbolt writes it. The page
// writer's version pin (pagewriter.VerifiedBbolt and its test) guards it: a
// move to another bbolt means reviewing this file first.
//
// A page starts with a header: ID (uint64), flags (uint16), element count
// (uint16), overflow page count (uint32). Elements follow, ElemSize bytes
// each: a leaf element is flags, position, key size, value size (uint32
// each), a branch element position, key size (uint32 each) and child page
// ID (uint64); positions count from the element itself. A bucket's value in
// its parent is its root page ID and sequence (uint64 each), then, for an
// inline bucket (root 0), its one leaf page.
package boltfmt

import (
	"encoding/binary"
	"hash/fnv"
)

// The format's constants.
const (
	Magic            = 0xED0CDAED // in every meta page
	Version          = 2          // the file format version in every meta page
	PageHeaderSize   = 16         // ID, flags, count, overflow
	ElemSize         = 16         // a leaf or branch element
	BranchPage       = 0x01       // page flags: a branch page
	LeafPage         = 0x02       // page flags: a leaf page
	MetaPage         = 0x04       // page flags: a meta page (pages 0 and 1)
	FreelistPage     = 0x10       // page flags: the freelist page
	BucketLeaf       = 0x01       // leaf element flags: the value is a bucket
	BucketHeaderSize = 16         // root page ID, sequence
	MaxElems         = 0xFFFF     // elements a page header can count
	NoFreelist       = ^uint64(0) // Meta.Freelist of a file without a freelist page
	MetaSize         = 64         // a meta page's contents after its header, checksum included
)

// Meta is a meta page's contents.
type Meta struct {
	Magic    uint32
	Version  uint32
	PageSize uint32
	Flags    uint32
	Root     uint64 // the root bucket's root page
	Sequence uint64 // the root bucket's sequence
	Freelist uint64 // the freelist page; NoFreelist: none
	HWM      uint64 // the high water mark: pages below it are in use or free
	TxID     uint64
	Checksum uint64 // FNV-1a 64 of the fields above as stored
}

// PutMeta writes meta page id with contents m, and its checksum (m.Checksum
// is ignored), into p, which holds at least PageHeaderSize+MetaSize bytes.
func PutMeta(p []byte, id uint64, m Meta) {
	ne := binary.NativeEndian
	ne.PutUint64(p[0:], id)
	ne.PutUint16(p[8:], MetaPage)
	b := p[PageHeaderSize:]
	ne.PutUint32(b[0:], m.Magic)
	ne.PutUint32(b[4:], m.Version)
	ne.PutUint32(b[8:], m.PageSize)
	ne.PutUint32(b[12:], m.Flags)
	ne.PutUint64(b[16:], m.Root)
	ne.PutUint64(b[24:], m.Sequence)
	ne.PutUint64(b[32:], m.Freelist)
	ne.PutUint64(b[40:], m.HWM)
	ne.PutUint64(b[48:], m.TxID)
	ne.PutUint64(b[56:], checksum(b))
}

// ReadMeta returns the page ID and flags in the header of the meta page p
// (at least PageHeaderSize+MetaSize bytes), its contents, and whether its
// checksum matches them.
func ReadMeta(p []byte) (id uint64, flags uint16, m Meta, sumOK bool) {
	ne := binary.NativeEndian
	b := p[PageHeaderSize:]
	m = Meta{
		Magic:    ne.Uint32(b[0:]),
		Version:  ne.Uint32(b[4:]),
		PageSize: ne.Uint32(b[8:]),
		Flags:    ne.Uint32(b[12:]),
		Root:     ne.Uint64(b[16:]),
		Sequence: ne.Uint64(b[24:]),
		Freelist: ne.Uint64(b[32:]),
		HWM:      ne.Uint64(b[40:]),
		TxID:     ne.Uint64(b[48:]),
		Checksum: ne.Uint64(b[56:]),
	}
	return ne.Uint64(p[0:]), ne.Uint16(p[8:]), m, m.Checksum == checksum(b)
}

// checksum is the checksum of a meta page's contents b.
func checksum(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b[:56])
	return h.Sum64()
}
