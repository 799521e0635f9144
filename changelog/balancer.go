package changelog

import (
	"cmp"
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
// addresses, each partition's owner and standbys, the generation, which
// member the receiver is, and (protocol v2) the member each moving partition
// is going to, so that it can restore that partition while its owner gives
// it up.
//
// The protocol name carries the wire version. A member offers both
// protocols, v2 first; the broker picks one that every member offers, so a
// group of this release speaks v2, and a group in the middle of a rolling
// deploy from a release that knows only v1 (which refuses a map of any
// other version) speaks v1 until its last old member is gone. Members
// sharing no protocol are refused by the broker
// (INCONSISTENT_GROUP_PROTOCOL) rather than misreading each other; the
// version byte of each encoding guards the rest.

const (
	// groupProtocolV1 and groupProtocolV2 are the names of the group
	// protocols (and so of the balancers) of partitioned mode; the members
	// of a group must share one.
	groupProtocolV1 = "compactkv-sticky-v1"
	groupProtocolV2 = "compactkv-sticky-v2"
)

var errEngineGone = errors.New("changelog: franz-go's sticky balancer no longer offers its engine " +
	"as a kgo.ConsumerBalancerBalance returning a *kgo.BalancePlan; partitioned mode needs it")

// groupBalancer is the kgo.GroupBalancer of partitioned mode (see the
// comment at the top of the file). The member side (what this member
// advertises, what it hears at SyncGroup) goes through self and synced, so
// the leader side is a pure function of the members' join metadata.
type groupBalancer struct {
	topic    string
	standbys int
	version  byte // the group map's: wireVersion (protocol v1) or mapVersionIncoming (v2)
	engine   kgo.ConsumerBalancerBalance

	self   func() joinMeta // this member's address and current standbys
	synced func(syncView)  // a SyncGroup answer this member received
}

// syncView is what one SyncGroup answer told this member.
type syncView struct {
	owned []int32   // this member's partitions of the topic, ascending
	gm    *groupMap // nil when the assignment carried no map
}

// newGroupBalancer returns the balancer of protocol v1 (version
// wireVersion) or v2 (mapVersionIncoming) for topic with n standbys per
// partition. It fails if franz-go's sticky engine cannot be reached (see
// TestTheStickyEngineIsReachable).
func newGroupBalancer(topic string, n int, version byte, self func() joinMeta, synced func(syncView)) (*groupBalancer, error) {
	engine, ok := kgo.StickyBalancer().(kgo.ConsumerBalancerBalance)
	if !ok {
		return nil, errEngineGone
	}
	return &groupBalancer{topic: topic, standbys: n, version: version, engine: engine, self: self, synced: synced}, nil
}

// ProtocolName implements kgo.GroupBalancer.
func (b *groupBalancer) ProtocolName() string {
	if b.version == mapVersionIncoming {
		return groupProtocolV2
	}
	return groupProtocolV1
}

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
	if b.version == mapVersionIncoming {
		// Where the moving partitions are going (never to one of their
		// standbys: those were chosen against it), so that their next
		// owners restore them while their owners give them up.
		gm.incoming = filled(np, -1)
		for p, o := range owner {
			if now[p] < 0 {
				gm.incoming[p] = o
			}
		}
	}
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

func filled(n, v int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}
