package kvstore

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Position says where acknowledged writes landed in the topic: for each
// partition they touched, the offset just past the last of them. A store
// that has applied a Position (WaitFor) shows those writes, and everything
// written to their partitions before them, to Get and Scan. Put and Delete
// return the Position of their write; Merge joins Positions, so that a
// session that wrote several keys holds one.
//
// A Position carries part of its topic's ID: a store refuses one from
// another topic, or from before its topic was deleted and recreated, with
// ErrForeignPosition. Its text form (String, MarshalText) is a compact
// opaque token safe in an HTTP header or a URL; ParsePosition reads it
// back. The zero Position covers nothing and is always applied.
type Position struct {
	topic [positionIDLen]byte // leading bytes of the topic ID; zero in the zero Position
	offs  []partOffset        // by partition, ascending; each partition once
}

// positionIDLen is how many leading bytes of the topic ID a Position keeps:
// enough that two topic IDs (random UUIDs) sharing them is not a concern.
const positionIDLen = 8

// positionVersion is the first byte of an encoded Position.
const positionVersion = 1

type partOffset struct {
	p    int32
	next int64 // the offset after the write
}

var (
	// ErrForeignPosition is returned for a Position of another topic, of an
	// earlier incarnation of this topic (deleted and recreated since), or
	// naming a partition the topic does not have.
	ErrForeignPosition = errors.New("kvstore: position is not of this topic")
	// ErrBadPosition is returned by ParsePosition for text that is not a
	// Position token.
	ErrBadPosition = errors.New("kvstore: malformed position token")
)

// positionAt returns the Position just past offset off of partition p of the
// topic with ID id.
func positionAt(id [16]byte, p int32, off int64) Position {
	var pos Position
	copy(pos.topic[:], id[:])
	pos.offs = []partOffset{{p: p, next: off + 1}}
	return pos
}

// Equal says whether pos and o cover the same offsets of the same topic.
// Positions are not comparable with ==.
func (pos Position) Equal(o Position) bool {
	return pos.topic == o.topic && slices.Equal(pos.offs, o.offs)
}

// IsZero says whether pos covers nothing (the zero Position).
func (pos Position) IsZero() bool { return len(pos.offs) == 0 }

// Merge returns a Position covering both pos and o: per partition, the
// later of the two. Positions of different topics do not merge
// (ErrForeignPosition); the zero Position merges with any.
func (pos Position) Merge(o Position) (Position, error) {
	switch {
	case o.IsZero():
		return pos, nil
	case pos.IsZero():
		return o, nil
	case pos.topic != o.topic:
		return Position{}, fmt.Errorf("%w: merging positions of two topics", ErrForeignPosition)
	}
	out := Position{topic: pos.topic, offs: make([]partOffset, 0, len(pos.offs)+len(o.offs))}
	i, j := 0, 0
	for i < len(pos.offs) || j < len(o.offs) {
		switch {
		case j == len(o.offs) || (i < len(pos.offs) && pos.offs[i].p < o.offs[j].p):
			out.offs = append(out.offs, pos.offs[i])
			i++
		case i == len(pos.offs) || o.offs[j].p < pos.offs[i].p:
			out.offs = append(out.offs, o.offs[j])
			j++
		default:
			out.offs = append(out.offs, partOffset{p: pos.offs[i].p, next: max(pos.offs[i].next, o.offs[j].next)})
			i, j = i+1, j+1
		}
	}
	return out, nil
}

// Only returns the part of pos that covers the given partitions: for a
// reader in partitioned mode that serves some of a token's partitions and
// forwards the rest (see Store.Owner).
func (pos Position) Only(partitions ...int32) Position {
	out := Position{topic: pos.topic}
	for _, o := range pos.offs {
		if slices.Contains(partitions, o.p) {
			out.offs = append(out.offs, o)
		}
	}
	return out // with no offsets left it is applied everywhere, yet still refused by another topic's store
}

// Offsets returns, per partition, the offset a store must have applied up
// to (exclusive) to have applied pos. It is meant for logs and metrics.
func (pos Position) Offsets() map[int32]int64 {
	m := make(map[int32]int64, len(pos.offs))
	for _, o := range pos.offs {
		m[o.p] = o.next
	}
	return m
}

// String returns pos as a token (unpadded URL-safe base64); "" for the zero
// Position.
func (pos Position) String() string {
	if pos.IsZero() {
		return ""
	}
	b := make([]byte, 0, 1+positionIDLen+1+len(pos.offs)*8)
	b = append(b, positionVersion)
	b = append(b, pos.topic[:]...)
	b = binary.AppendUvarint(b, uint64(len(pos.offs)))
	for _, o := range pos.offs {
		b = binary.AppendUvarint(b, uint64(o.p))
		b = binary.AppendUvarint(b, uint64(o.next))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// MarshalText returns String's token.
func (pos Position) MarshalText() ([]byte, error) { return []byte(pos.String()), nil }

// UnmarshalText reads a token as ParsePosition does.
func (pos *Position) UnmarshalText(text []byte) error {
	p, err := ParsePosition(string(text))
	if err != nil {
		return err
	}
	*pos = p
	return nil
}

// ParsePosition reads a token that String wrote. "" is the zero Position.
// Anything else that is not such a token is an error wrapping
// ErrBadPosition; whether the Position is of a given store's topic is
// checked by the store (WaitFor).
func ParsePosition(s string) (Position, error) {
	if s == "" {
		return Position{}, nil
	}
	bad := func(why string) (Position, error) {
		return Position{}, fmt.Errorf("%w: %s", ErrBadPosition, why)
	}
	if len(s) > 4096 {
		return bad("longer than 4096 characters")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return bad("not unpadded URL-safe base64")
	}
	if len(b) < 1+positionIDLen || b[0] != positionVersion {
		return bad("unknown version or too short")
	}
	var pos Position
	copy(pos.topic[:], b[1:1+positionIDLen])
	b = b[1+positionIDLen:]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	n, ok := next()
	if !ok || n == 0 || n > uint64(len(b)) {
		return bad("bad partition count")
	}
	pos.offs = make([]partOffset, 0, n)
	for range n {
		p, ok1 := next()
		off, ok2 := next()
		switch {
		case !ok1 || !ok2:
			return bad("truncated")
		case p > 1<<31-1 || off > 1<<63-1:
			return bad("partition or offset out of range")
		case len(pos.offs) > 0 && int32(p) <= pos.offs[len(pos.offs)-1].p:
			return bad("partitions not in ascending order")
		}
		pos.offs = append(pos.offs, partOffset{p: int32(p), next: int64(off)})
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	return pos, nil
}

// of checks that pos is of the topic with ID id and partitions partitions.
func (pos Position) of(id [16]byte, partitions int32) error {
	if pos.topic == ([positionIDLen]byte{}) {
		return nil // the zero Position
	}
	if !slices.Equal(pos.topic[:], id[:positionIDLen]) {
		return fmt.Errorf("%w: the position is of another topic, or of this topic before it was recreated", ErrForeignPosition)
	}
	for _, o := range pos.offs {
		if o.p >= partitions {
			return fmt.Errorf("%w: partition %d, the topic has %d", ErrForeignPosition, o.p, partitions)
		}
	}
	return nil
}
