package changelog

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The group protocol of partitioned mode.
//
// A member's JoinGroup metadata is a plain consumer-protocol
// kmsg.ConsumerMemberMetadata (topics, owned partitions, generation, as
// cooperative-sticky sends them) whose UserData is a joinMeta: the member's
// advertised address and the partitions it keeps warm as a standby.
//
// The leader balances with franz-go's sticky engine (the eager flavour, so
// that it sees the plan before the cooperative adjustment and so knows where
// a moving partition is going), hands each orphaned partition (one no member
// owns any more) to one of its standbys when the engine's counts allow,
// chooses the standbys, and only then applies the cooperative adjustment.
// Every member's SyncGroup assignment, including a member given no
// partitions, carries the whole groupMap in its UserData: the members'
// addresses, each partition's owner and standbys, the generation, and which
// member the receiver is.
//
// The protocol name carries the wire version, so members of incompatible
// versions are refused by the broker (INCONSISTENT_GROUP_PROTOCOL) rather
// than misreading each other; the version byte of each encoding guards the
// rest.

const (
	// groupProtocolName is the name of the group protocol (and so of the
	// balancer) every member of a partitioned-mode group must agree on.
	groupProtocolName = "compactkv-sticky-v1"

	// wireVersion is the first byte of both encodings.
	wireVersion byte = 1

	// maxAdvertiseLen bounds an advertised address, on both sides.
	maxAdvertiseLen = 1024
)

var (
	errEngineGone = errors.New("changelog: franz-go's sticky balancer no longer offers its engine " +
		"as a kgo.ConsumerBalancerBalance returning a *kgo.BalancePlan; partitioned mode needs it")
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
func (g *groupMap) ownedBy(i int) []int32 {
	var ps []int32
	for p, o := range g.owner {
		if o == i {
			ps = append(ps, int32(p))
		}
	}
	return ps
}

// standbyOf returns the partitions member i is a standby of, ascending.
func (g *groupMap) standbyOf(i int) []int32 {
	var ps []int32
	for p, sb := range g.standby {
		if slices.Contains(sb, i) {
			ps = append(ps, int32(p))
		}
	}
	return ps
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
// (uvarint count, uvarint indices).
func encodeGroupMap(g *groupMap) []byte {
	b := []byte{wireVersion}
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
	return b
}

// decodeGroupMap reads what encodeGroupMap wrote and refuses anything else:
// another version, a short or long buffer, a member index out of range, a
// standby that is also the owner or listed twice.
func decodeGroupMap(b []byte) (*groupMap, error) {
	r := wireReader{b: b}
	if v := r.byte(); v != wireVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", errBadGroupMap, v, wireVersion)
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

// groupBalancer is the kgo.GroupBalancer of partitioned mode (see the
// comment at the top of the file). The member side (what this member
// advertises, what it hears at SyncGroup) goes through self and synced, so
// the leader side is a pure function of the members' join metadata.
type groupBalancer struct {
	topic    string
	standbys int
	engine   kgo.ConsumerBalancerBalance

	self   func() joinMeta // this member's address and current standbys
	synced func(syncView)  // a SyncGroup answer this member received
}

// syncView is what one SyncGroup answer told this member.
type syncView struct {
	owned []int32   // this member's partitions of the topic, ascending
	gm    *groupMap // nil when the assignment carried no map
}

// newGroupBalancer returns the balancer for topic with n standbys per
// partition. It fails if franz-go's sticky engine cannot be reached (see
// TestTheStickyEngineIsReachable).
func newGroupBalancer(topic string, n int, self func() joinMeta, synced func(syncView)) (*groupBalancer, error) {
	engine, ok := kgo.StickyBalancer().(kgo.ConsumerBalancerBalance)
	if !ok {
		return nil, errEngineGone
	}
	return &groupBalancer{topic: topic, standbys: n, engine: engine, self: self, synced: synced}, nil
}

// ProtocolName implements kgo.GroupBalancer.
func (*groupBalancer) ProtocolName() string { return groupProtocolName }

// IsCooperative implements kgo.GroupBalancer: members keep what they are not
// losing while the group rebalances.
func (*groupBalancer) IsCooperative() bool { return true }

// JoinGroupMetadata implements kgo.GroupBalancer: what cooperative-sticky
// sends (topics, owned partitions, generation), with this member's joinMeta
// as UserData.
func (b *groupBalancer) JoinGroupMetadata(interests []string, current map[string][]int32, generation int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 3
	meta.Topics = interests
	meta.Generation = generation
	topics := make([]string, 0, len(current))
	for t := range current {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		owned := kmsg.NewConsumerMemberMetadataOwnedPartition()
		owned.Topic = t
		owned.Partitions = current[t]
		meta.OwnedPartitions = append(meta.OwnedPartitions, owned)
	}
	meta.UserData = encodeJoinMeta(b.self())
	return meta.AppendTo(nil)
}

// ParseSyncAssignment implements kgo.GroupBalancer: it reads this member's
// partitions and the group's map, and refuses a map it cannot read or that
// disagrees with the partitions the assignment gives this member (the
// session then fails and the member joins again). An empty assignment, or
// one without a map, is taken as it is: a member can miss a generation's
// map.
func (b *groupBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	assigned := make(map[string][]int32)
	var gm *groupMap
	if len(assignment) > 0 {
		var a kmsg.ConsumerMemberAssignment
		if err := a.ReadFrom(assignment); err != nil {
			return nil, fmt.Errorf("changelog: read group assignment: %w", err)
		}
		for _, t := range a.Topics {
			assigned[t.Topic] = append(assigned[t.Topic], t.Partitions...)
		}
		if len(a.UserData) > 0 {
			var err error
			if gm, err = decodeGroupMap(a.UserData); err != nil {
				return nil, err
			}
		}
	}
	owned := slices.Clone(assigned[b.topic])
	slices.Sort(owned)
	if gm != nil {
		if want := gm.ownedBy(gm.self); !slices.Equal(owned, want) {
			return nil, fmt.Errorf("%w: the assignment gives partitions %v of topic %q, the map %v",
				errBadGroupMap, owned, b.topic, want)
		}
	}
	if b.synced != nil {
		b.synced(syncView{owned: owned, gm: gm})
	}
	return assigned, nil
}

// MemberBalancer implements kgo.GroupBalancer. It returns the
// *kgo.ConsumerBalancer itself: kgo hands a ConsumerBalancer the balance
// info (generation, leader) and rack data, and would not hand them to a
// wrapper.
func (b *groupBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	cb, err := kgo.NewConsumerBalancer(b, members)
	if err != nil {
		return nil, nil, fmt.Errorf("changelog: read the group members' metadata: %w", err)
	}
	return cb, cb.MemberTopics(), nil
}

// syncAssignments is a finished plan, one assignment per member.
type syncAssignments []kmsg.SyncGroupRequestGroupAssignment

func (s syncAssignments) IntoSyncAssignment() []kmsg.SyncGroupRequestGroupAssignment { return s }

// Balance implements kgo.ConsumerBalancerBalance; kgo calls it on the leader
// through the ConsumerBalancer. It is deterministic (a function of the
// members, in the order kgo sorted them, and the partition counts) and
// touches nothing outside its arguments, since kfake may let several
// members balance the same generation.
func (b *groupBalancer) Balance(cb *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	nm := len(cb.Members())
	np := max(int(topics[b.topic]), 0)
	ids := make([]string, nm)
	index := make(map[string]int, nm)
	addrs := make([]string, nm)
	var cands []int // members subscribed to the topic, ascending
	prevOwner, claimGen := filled(np, -1), make([]int32, np)
	prevStandby := make([][]int, np)
	for i := range nm {
		m, meta := cb.MemberAt(i)
		ids[i], index[m.MemberID] = m.MemberID, i
		if slices.Contains(meta.Topics, b.topic) {
			cands = append(cands, i)
		}
		// A member whose metadata cannot be read still takes part; it
		// advertises no address and keeps nothing warm.
		if jm, err := decodeJoinMeta(meta.UserData); err == nil {
			addrs[i] = jm.addr
			for _, p := range jm.standby {
				if int(p) < np {
					prevStandby[p] = append(prevStandby[p], i)
				}
			}
		}
		for _, t := range meta.OwnedPartitions {
			if t.Topic != b.topic {
				continue
			}
			for _, p := range t.Partitions {
				if p >= 0 && int(p) < np && (prevOwner[p] < 0 || meta.Generation > claimGen[p]) {
					prevOwner[p], claimGen[p] = i, meta.Generation
				}
			}
		}
		// Our bytes would read as garbage sticky history: give the
		// engine the history cooperative-sticky would have sent.
		meta.UserData = stickyHistory(meta)
	}

	into := b.engine.Balance(cb, topics)
	plan, ok := into.(*kgo.BalancePlan)
	if !ok {
		cb.SetError(errEngineGone)
		return nil
	}
	pm := plan.AsMemberIDMap()

	// The target owners, before the cooperative adjustment.
	owner := filled(np, -1)
	for id, ts := range pm {
		for _, p := range ts[b.topic] {
			if p >= 0 && int(p) < np {
				owner[p] = index[id]
			}
		}
	}
	if promoteStandbys(owner, prevOwner, prevStandby) {
		byMember := make([][]int32, nm)
		for p, o := range owner {
			if o >= 0 {
				byMember[o] = append(byMember[o], int32(p))
			}
		}
		for i, id := range ids {
			if pm[id] == nil {
				pm[id] = make(map[string][]int32)
			}
			if len(byMember[i]) > 0 {
				pm[id][b.topic] = byMember[i]
			} else {
				delete(pm[id], b.topic)
			}
		}
	}
	owned := make([]int, nm)
	for _, o := range owner {
		if o >= 0 {
			owned[o]++
		}
	}
	standby := assignStandbys(b.standbys, cands, owner, prevOwner, prevStandby, owned)

	// Partitions moving from one member to another belong to nobody
	// until their owner has revoked them and the group rebalanced again.
	plan.AdjustCooperative(cb)
	now := filled(np, -1)
	for id, ts := range pm {
		for _, p := range ts[b.topic] {
			if p >= 0 && int(p) < np {
				now[p] = index[id]
			}
		}
	}

	gm := &groupMap{generation: cb.Info().Generation, addrs: addrs, owner: now, standby: standby}
	out := make(syncAssignments, 0, nm)
	for i, id := range ids {
		gm.self = i
		a := kmsg.NewConsumerMemberAssignment()
		ts := make([]string, 0, len(pm[id]))
		for t := range pm[id] {
			ts = append(ts, t)
		}
		sort.Strings(ts)
		for _, t := range ts {
			at := kmsg.NewConsumerMemberAssignmentTopic()
			at.Topic = t
			at.Partitions = slices.Sorted(slices.Values(pm[id][t]))
			a.Topics = append(a.Topics, at)
		}
		a.UserData = encodeGroupMap(gm)
		sa := kmsg.NewSyncGroupRequestGroupAssignment()
		sa.MemberID = id
		sa.MemberAssignment = a.AppendTo(nil)
		out = append(out, sa)
	}
	slices.SortFunc(out, func(x, y kmsg.SyncGroupRequestGroupAssignment) int { return cmp.Compare(x.MemberID, y.MemberID) })
	return out
}

// stickyHistory is the sticky engine's own user data for a member: what it
// owns and at which generation, as cooperative-sticky's metadata carries it.
func stickyHistory(meta *kmsg.ConsumerMemberMetadata) []byte {
	h := kmsg.NewStickyMemberMetadata()
	h.Generation = meta.Generation
	for _, t := range meta.OwnedPartitions {
		a := kmsg.NewStickyMemberMetadataCurrentAssignment()
		a.Topic = t.Topic
		a.Partitions = t.Partitions
		h.CurrentAssignment = append(h.CurrentAssignment, a)
	}
	return h.AppendTo(nil)
}

// promoteStandbys hands each orphaned partition (one no member claims to
// own) to one of its previous standbys, keeping the number of orphans each
// member receives as the engine chose it: orphans move nothing that is
// owned, so the engine's balance and stickiness hold. It reports whether it
// changed an owner.
func promoteStandbys(owner, prevOwner []int, prevStandby [][]int) bool {
	quota := make(map[int]int)
	var orphans []int
	for p, o := range owner {
		if o >= 0 && prevOwner[p] < 0 {
			orphans = append(orphans, p)
			quota[o]++
		}
	}
	if len(quota) < 2 {
		return false // one receiver (or none): nothing to choose
	}
	next := make(map[int]int, len(orphans))
	take := func(p, m int) bool {
		if quota[m] == 0 {
			return false
		}
		quota[m]--
		next[p] = m
		return true
	}
	for _, p := range orphans { // to a standby that can take it
		for _, m := range prevStandby[p] {
			if take(p, m) {
				break
			}
		}
	}
	for _, p := range orphans { // else where the engine put it, while it has room
		if _, done := next[p]; !done {
			take(p, owner[p])
		}
	}
	receivers := make([]int, 0, len(quota))
	for m := range quota {
		receivers = append(receivers, m)
	}
	slices.Sort(receivers)
	for _, p := range orphans { // else to the first receiver with room left
		if _, done := next[p]; !done {
			for _, m := range receivers {
				if take(p, m) {
					break
				}
			}
		}
	}
	changed := false
	for p, m := range next {
		if owner[p] != m {
			owner[p], changed = m, true
		}
	}
	return changed
}

// assignStandbys picks, for every partition, min(n, members-1) standbys
// among cands other than its owner. Each member gets either floor or ceil of
// the average number of standbys (the extra ones go to the members that own
// the fewest partitions). Standbys stay where they were when they can (then
// a partition's previous owner is preferred: its copy is warm), new ones go
// to the members with the most room, and a last pass moves standbys from
// members over their share to members under it.
func assignStandbys(n int, cands, owner, prevOwner []int, prevStandby [][]int, owned []int) [][]int {
	np := len(owner)
	sb := make([][]int, np)
	k := min(n, len(cands)-1)
	if np == 0 || k <= 0 {
		return sb
	}
	nm := len(owned)
	isCand := make([]bool, nm)
	for _, m := range cands {
		isCand[m] = true
	}
	total := np * k
	byOwned := slices.Clone(cands)
	slices.SortStableFunc(byOwned, func(a, b int) int { return cmp.Compare(owned[a], owned[b]) })
	share := make([]int, nm)
	for i, m := range byOwned {
		share[m] = total / len(cands)
		if i < total%len(cands) {
			share[m]++
		}
	}
	load := make([]int, nm)
	ok := func(p, m int) bool { return m >= 0 && isCand[m] && m != owner[p] && !slices.Contains(sb[p], m) }
	add := func(p, m int) { sb[p] = append(sb[p], m); load[m]++ }

	// 1. Stay where they were, then the previous owner, within the shares.
	for p := range np {
		for _, m := range append(slices.Clone(prevStandby[p]), prevOwner[p]) {
			if len(sb[p]) < k && ok(p, m) && load[m] < share[m] {
				add(p, m)
			}
		}
	}
	// 2. Fill, taking the owners' partitions in turn so that no member's
	// room is used up on one owner's partitions.
	for _, p := range interleaveByOwner(owner) {
		for len(sb[p]) < k {
			best := -1
			for _, m := range cands {
				if !ok(p, m) {
					continue
				}
				if best < 0 || load[m]-share[m] < load[best]-share[best] {
					best = m
				}
			}
			add(p, best) // there is one: k < len(cands)
		}
	}
	// 3. Move standbys from members over their share to members under it.
	for moved := true; moved; {
		moved = false
		for _, hi := range cands {
			for _, lo := range cands {
				for p := 0; p < np && load[hi] > share[hi] && load[lo] < share[lo]; p++ {
					if i := slices.Index(sb[p], hi); i >= 0 && ok(p, lo) {
						sb[p][i] = lo
						load[hi]--
						load[lo]++
						moved = true
					}
				}
			}
		}
	}
	for p := range sb {
		slices.Sort(sb[p])
	}
	return sb
}

// interleaveByOwner orders the partitions as the first of each owner's,
// then the second of each, and so on.
func interleaveByOwner(owner []int) []int {
	rank := make([]int, len(owner))
	seen := make(map[int]int)
	order := make([]int, len(owner))
	for p, o := range owner {
		rank[p] = seen[o]
		seen[o]++
		order[p] = p
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(rank[a], rank[b]), cmp.Compare(owner[a], owner[b]))
	})
	return order
}

func filled(n, v int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}
