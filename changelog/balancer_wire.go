package changelog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

const (
	// wireVersion is the first byte of the join metadata, and of a group
	// map of protocol v1 (no incoming partitions).
	wireVersion byte = 1

	// mapVersionIncoming is the first byte of a group map of protocol v2:
	// a version-1 map followed by where each moving partition is going.
	mapVersionIncoming byte = 2

	// maxAdvertiseLen bounds an advertised address, on both sides.
	maxAdvertiseLen = 1024
)

var (
	errBadJoinMeta = errors.New("changelog: unreadable group join metadata")
	errBadGroupMap = errors.New("changelog: unreadable group assignment map")
)

// joinMeta is what a member tells the leader in its join metadata's UserData.
type joinMeta struct {
	addr    string  // the member's advertised address
	standby []int32 // the partitions it keeps warm now, ascending
}

// groupMap is the group's whole assignment as the leader decided it for one
// generation, as every member receives it.
type groupMap struct {
	generation int32
	self       int      // the receiving member's index in addrs
	addrs      []string // by member index, in the order the leader balanced them
	owner      []int    // by partition: the owner's member index, -1 while it has none
	standby    [][]int  // by partition: the standbys' member indices, ascending
	// incoming is, by partition, the member index a partition moving in a
	// cooperative rebalance goes to (its owner then -1), -1 for the others;
	// nil in a map of protocol v1, which does not say.
	incoming []int
}

// owners returns every partition's owner address ("" when it has none).
func (g *groupMap) owners() map[int32]string {
	m := make(map[int32]string, len(g.owner))
	for p, o := range g.owner {
		if o >= 0 {
			m[int32(p)] = g.addrs[o]
		} else {
			m[int32(p)] = ""
		}
	}
	return m
}

// ownedBy returns the partitions member i owns, ascending.
func (g *groupMap) ownedBy(i int) []int32 { return partitionsOf(g.owner, i) }

// partitionsOf returns the partitions p with member[p] == i, ascending.
func partitionsOf(member []int, i int) []int32 {
	var ps []int32
	for p, m := range member {
		if m == i {
			ps = append(ps, int32(p))
		}
	}
	return ps
}

// standbyOf returns the partitions member i is a standby of, ascending
// (not those incoming to it).
func (g *groupMap) standbyOf(i int) []int32 {
	var ps []int32
	for p, sb := range g.standby {
		if slices.Contains(sb, i) {
			ps = append(ps, int32(p))
		}
	}
	return ps
}

// incomingOf returns the partitions moving to member i, ascending: none in
// a map of protocol v1.
func (g *groupMap) incomingOf(i int) []int32 { return partitionsOf(g.incoming, i) }

// moving says whether a partition has no owner: the map is of the first
// round of a cooperative rebalance, and a second round follows.
func (g *groupMap) moving() bool {
	return slices.Contains(g.owner, -1)
}

// encodeJoinMeta encodes: version, address (uvarint length, bytes),
// standby count and partitions (uvarints, strictly ascending).
func encodeJoinMeta(j joinMeta) []byte {
	b := []byte{wireVersion}
	b = binary.AppendUvarint(b, uint64(len(j.addr)))
	b = append(b, j.addr...)
	b = binary.AppendUvarint(b, uint64(len(j.standby)))
	for _, p := range j.standby {
		b = binary.AppendUvarint(b, uint64(p))
	}
	return b
}

// decodeJoinMeta reads what encodeJoinMeta wrote and refuses anything else:
// another version, a short or long buffer, an oversized address, standbys out
// of order or out of range.
func decodeJoinMeta(b []byte) (joinMeta, error) {
	r := wireReader{b: b}
	if v := r.byte(); v != wireVersion {
		return joinMeta{}, fmt.Errorf("%w: version %d, want %d", errBadJoinMeta, v, wireVersion)
	}
	var j joinMeta
	j.addr = r.string(maxAdvertiseLen)
	n := r.count(1)
	prev := int64(-1)
	for range n {
		p := r.partition()
		if int64(p) <= prev {
			r.fail("standby partitions not strictly ascending")
		}
		prev = int64(p)
		j.standby = append(j.standby, p)
	}
	if err := r.done(); err != nil {
		return joinMeta{}, fmt.Errorf("%w: %w", errBadJoinMeta, err)
	}
	return j, nil
}

// encodeGroupMap encodes: version, self (uvarint), generation (varint),
// member count and addresses, partition count, each partition's owner
// (uvarint, 0 for none, else index+1), then each partition's standbys
// (uvarint count, uvarint indices); in version 2 (g.incoming set), then
// each partition's incoming member (uvarint, 0 for none, else index+1).
// Version 1 is the whole map of protocol v1, which members of an older
// release read and refuse anything else.
func encodeGroupMap(g *groupMap) []byte {
	v := wireVersion
	if g.incoming != nil {
		v = mapVersionIncoming
	}
	b := []byte{v}
	b = binary.AppendUvarint(b, uint64(g.self))
	b = binary.AppendVarint(b, int64(g.generation))
	b = binary.AppendUvarint(b, uint64(len(g.addrs)))
	for _, a := range g.addrs {
		b = binary.AppendUvarint(b, uint64(len(a)))
		b = append(b, a...)
	}
	b = binary.AppendUvarint(b, uint64(len(g.owner)))
	for _, o := range g.owner {
		b = binary.AppendUvarint(b, uint64(o+1))
	}
	for _, sb := range g.standby {
		b = binary.AppendUvarint(b, uint64(len(sb)))
		for _, m := range sb {
			b = binary.AppendUvarint(b, uint64(m))
		}
	}
	for _, m := range g.incoming {
		b = binary.AppendUvarint(b, uint64(m+1))
	}
	return b
}

// decodeGroupMap reads what encodeGroupMap wrote, in either version, and
// refuses anything else: another version, a short or long buffer, a member
// index out of range, a standby that is also the owner or listed twice, a
// partition incoming to a member while it has an owner or to one of its
// standbys.
func decodeGroupMap(b []byte) (*groupMap, error) {
	r := wireReader{b: b}
	v := r.byte()
	if v != wireVersion && v != mapVersionIncoming {
		return nil, fmt.Errorf("%w: version %d, want %d or %d", errBadGroupMap, v, wireVersion, mapVersionIncoming)
	}
	g := &groupMap{}
	self := r.uvarint()
	gen := r.varint()
	if gen < -1<<31 || gen > 1<<31-1 {
		r.fail("generation out of range")
	}
	g.generation = int32(gen)
	nm := r.count(1)
	if r.err == nil && self >= uint64(nm) {
		r.fail(fmt.Sprintf("self %d is not one of %d members", self, nm))
	}
	g.self = int(self)
	g.addrs = make([]string, 0, nm)
	for range nm {
		g.addrs = append(g.addrs, r.string(maxAdvertiseLen))
	}
	member := func() int {
		i := r.uvarint()
		if i >= uint64(nm) {
			r.fail(fmt.Sprintf("member index %d is not one of %d members", i, nm))
			return 0
		}
		return int(i)
	}
	np := r.count(2) // an owner and a standby count per partition
	g.owner = make([]int, np)
	for p := range np {
		o := r.uvarint()
		if o > uint64(nm) {
			r.fail(fmt.Sprintf("partition %d: owner %d is not one of %d members", p, o-1, nm))
		}
		g.owner[p] = int(o) - 1
	}
	g.standby = make([][]int, np)
	for p := range np {
		n := r.count(1)
		for range n {
			m := member()
			if m == g.owner[p] || slices.Contains(g.standby[p], m) {
				r.fail(fmt.Sprintf("partition %d: member %d is its owner or already its standby", p, m))
			}
			g.standby[p] = append(g.standby[p], m)
		}
		if r.err != nil {
			break
		}
	}
	if v == mapVersionIncoming && r.err == nil {
		g.incoming = make([]int, np)
		for p := range np {
			m := r.uvarint()
			if m > uint64(nm) {
				r.fail(fmt.Sprintf("partition %d: incoming member %d is not one of %d members", p, m-1, nm))
				break
			}
			g.incoming[p] = int(m) - 1
			if m > 0 && (g.owner[p] >= 0 || slices.Contains(g.standby[p], g.incoming[p])) {
				r.fail(fmt.Sprintf("partition %d: incoming to member %d while it has an owner or that member is its standby", p, m-1))
			}
		}
	}
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadGroupMap, err)
	}
	return g, nil
}

// wireReader reads the two encodings; the first problem sticks.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) fail(why string) {
	if r.err == nil {
		r.err = errors.New(why)
	}
	r.b = nil
}

func (r *wireReader) byte() byte {
	if len(r.b) == 0 {
		r.fail("short buffer")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *wireReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.fail("bad, overlong or short uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 || n != len(binary.AppendVarint(nil, v)) {
		r.fail("bad, overlong or short varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a count of items that take at least each bytes apiece, and
// refuses one the rest of the buffer cannot hold.
func (r *wireReader) count(each int) int {
	n := r.uvarint()
	if n > uint64(len(r.b)/each) {
		r.fail(fmt.Sprintf("count %d larger than the %d bytes left", n, len(r.b)))
		return 0
	}
	return int(n)
}

func (r *wireReader) string(maxLen int) string {
	n := r.uvarint()
	if n > uint64(maxLen) || n > uint64(len(r.b)) {
		r.fail(fmt.Sprintf("string of %d bytes (at most %d, %d left)", n, maxLen, len(r.b)))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *wireReader) partition() int32 {
	p := r.uvarint()
	if p > 1<<31-1 {
		r.fail("partition out of range")
		return 0
	}
	return int32(p)
}

func (r *wireReader) done() error {
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return r.err
}
