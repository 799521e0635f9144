package changelog

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// simMember is a group member as the leader sees it in a JoinGroup answer.
type simMember struct {
	id, addr string
	gen      int32   // the generation it last synced, -1 if none
	owned    []int32 // what it owns, as its join metadata claims
	standby  []int32 // what it keeps warm, as its join metadata says
}

func simMembers(n int) []simMember {
	ms := make([]simMember, n)
	for i := range ms {
		ms[i] = simMember{id: fmt.Sprintf("m%02d", i), addr: fmt.Sprintf("host%02d:80", i), gen: -1}
	}
	return ms
}

// joinResponse builds the members of a JoinGroup answer as the members'
// balancers would have sent their metadata, in kgo's order (member ID).
func joinResponse(t *testing.T, topic string, ms []simMember) []kmsg.JoinGroupResponseMember {
	t.Helper()
	out := make([]kmsg.JoinGroupResponseMember, 0, len(ms))
	for _, m := range ms {
		b, err := newGroupBalancer(topic, 0, mapVersionIncoming, func() joinMeta { return joinMeta{addr: m.addr, standby: m.standby} }, nil)
		require.NoError(t, err)
		current := map[string][]int32{}
		if len(m.owned) > 0 {
			current[topic] = slices.Clone(m.owned)
		}
		jm := kmsg.NewJoinGroupResponseMember()
		jm.MemberID = m.id
		jm.ProtocolMetadata = b.JoinGroupMetadata([]string{topic}, current, m.gen)
		out = append(out, jm)
	}
	slices.SortFunc(out, func(a, b kmsg.JoinGroupResponseMember) int { return cmpString(a.MemberID, b.MemberID) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// balanceRaw runs the leader's side once, with the balancer of protocol v2,
// and returns the SyncGroup assignments.
func balanceRaw(t *testing.T, topic string, np int32, standbys int, gen int32, ms []simMember) []kmsg.SyncGroupRequestGroupAssignment {
	t.Helper()
	return balanceVersion(t, mapVersionIncoming, topic, np, standbys, gen, ms)
}

// balanceVersion runs the leader's side once with the balancer of the
// protocol whose map has version v.
func balanceVersion(t *testing.T, v byte, topic string, np int32, standbys int, gen int32, ms []simMember) []kmsg.SyncGroupRequestGroupAssignment {
	t.Helper()
	b, err := newGroupBalancer(topic, standbys, v, nil, nil)
	require.NoError(t, err)
	gmb, topics, err := b.MemberBalancer(joinResponse(t, topic, ms))
	require.NoError(t, err)
	require.Contains(t, topics, topic)
	_, isCB := gmb.(*kgo.ConsumerBalancer)
	require.True(t, isCB, "the member balancer is kgo's ConsumerBalancer itself, or kgo skips SetBalanceInfo")
	gmb.(kgo.GroupMemberBalancerInfo).SetBalanceInfo(kgo.BalanceInfo{Generation: gen})
	into, err := gmb.(kgo.GroupMemberBalancerOrError).BalanceOrError(map[string]int32{topic: np})
	require.NoError(t, err)
	return into.IntoSyncAssignment()
}

// balance runs the leader's side once and returns what every member reads
// from its SyncGroup answer.
func balance(t *testing.T, np int32, standbys int, gen int32, ms []simMember) map[string]syncView {
	t.Helper()
	out := make(map[string]syncView)
	for _, a := range balanceRaw(t, "t", np, standbys, gen, ms) {
		var got syncView
		r, err := newGroupBalancer("t", standbys, mapVersionIncoming, nil, func(sv syncView) { got = sv })
		require.NoError(t, err)
		assigned, err := r.ParseSyncAssignment(a.MemberAssignment)
		require.NoError(t, err)
		require.Equal(t, got.owned, sortedCopy(assigned["t"]))
		require.NotNil(t, got.gm, "member %s got no map", a.MemberID)
		require.Equal(t, gen, got.gm.generation)
		out[a.MemberID] = got
	}
	require.Len(t, out, len(ms), "every member gets an assignment, with or without partitions")
	return out
}

func sortedCopy(ps []int32) []int32 {
	ps = slices.Clone(ps)
	slices.Sort(ps)
	return ps
}

// apply makes every member's next join metadata from what it received:
// its standbys include its incoming partitions, as Membership advertises
// them.
func apply(ms []simMember, views map[string]syncView, gen int32) []simMember {
	out := slices.Clone(ms)
	for i := range out {
		v := views[out[i].id]
		sb := append(v.gm.standbyOf(v.gm.self), v.gm.incomingOf(v.gm.self)...)
		slices.Sort(sb)
		out[i].gen, out[i].owned, out[i].standby = gen, v.owned, sb
	}
	return out
}

// settle balances rounds until nothing moves any more (at most 4) and
// returns the members and the last views.
func settle(t *testing.T, np int32, standbys int, gen int32, ms []simMember) ([]simMember, map[string]syncView, int32) {
	t.Helper()
	for range 4 {
		gen++
		views := balance(t, np, standbys, gen, ms)
		next := apply(ms, views, gen)
		done := true
		for _, v := range views {
			if slices.Contains(v.gm.owner, -1) {
				done = false
			}
		}
		ms = next
		if done {
			return ms, views, gen
		}
	}
	t.Fatalf("the group did not settle in 4 rounds")
	return nil, nil, 0
}

// checkMap checks that every member got the same map, that it names the
// members' addresses, and that standbys are where they should be.
func checkMap(t *testing.T, np int32, n int, ms []simMember, views map[string]syncView) *groupMap {
	t.Helper()
	var ref *groupMap
	for i, m := range ms {
		v := views[m.id]
		require.Equal(t, i, v.gm.self, "members are indexed in kgo's order")
		require.Equal(t, m.addr, v.gm.addrs[v.gm.self])
		require.Equal(t, v.owned, v.gm.ownedBy(v.gm.self))
		if ref == nil {
			ref = v.gm
			continue
		}
		require.Equal(t, ref.addrs, v.gm.addrs)
		require.Equal(t, ref.owner, v.gm.owner)
		require.Equal(t, ref.standby, v.gm.standby)
		require.Equal(t, ref.incoming, v.gm.incoming)
	}
	require.Len(t, ref.owner, int(np))
	k := min(n, len(ms)-1)
	load := make([]int, len(ms))
	for p, sb := range ref.standby {
		require.Len(t, sb, max(k, 0), "partition %d", p)
		for _, m := range sb {
			require.NotEqual(t, ref.owner[p], m, "partition %d: its owner is not its standby", p)
			load[m]++
		}
	}
	if len(ms) > 0 && k > 0 {
		require.LessOrEqual(t, slices.Max(load)-slices.Min(load), 1, "standbys spread evenly: %v", load)
	}
	return ref
}

// The balancer reaches franz-go's sticky engine through an undocumented
// type assertion; this fails loudly if a franz-go upgrade takes it away.
func TestTheStickyEngineIsReachable(t *testing.T) {
	engine, ok := kgo.StickyBalancer().(kgo.ConsumerBalancerBalance)
	require.True(t, ok, "kgo.StickyBalancer() no longer satisfies kgo.ConsumerBalancerBalance")
	cb, err := kgo.NewConsumerBalancer(engine, joinResponse(t, "t", simMembers(2)))
	require.NoError(t, err)
	into := engine.Balance(cb, map[string]int32{"t": 4})
	require.IsType(t, &kgo.BalancePlan{}, into, "the sticky engine no longer returns a *kgo.BalancePlan")
	_, err = newGroupBalancer("t", 1, mapVersionIncoming, nil, nil)
	require.NoError(t, err)
}

func TestBalanceSplitsFairlyAndGivesEveryMemberTheMap(t *testing.T) {
	ms, views, _ := settle(t, 12, 1, 0, simMembers(3))
	gm := checkMap(t, 12, 1, ms, views)
	for _, m := range ms {
		require.Len(t, views[m.id].owned, 4)
		require.Len(t, gm.standbyOf(views[m.id].gm.self), 4)
		require.Empty(t, intersect(views[m.id].owned, gm.standbyOf(views[m.id].gm.self)))
	}
	owners := gm.owners()
	for p := range int32(12) {
		require.Equal(t, gm.addrs[gm.owner[p]], owners[p])
	}

	// More members than partitions: the ones without any still get the map.
	ms, views, _ = settle(t, 12, 1, 0, simMembers(13))
	gm = checkMap(t, 12, 1, ms, views)
	empty := 0
	for _, m := range ms {
		require.LessOrEqual(t, len(views[m.id].owned), 1)
		if len(views[m.id].owned) == 0 {
			empty++
			require.Equal(t, gm.owner, views[m.id].gm.owner)
		}
	}
	require.Equal(t, 1, empty)
}

func TestStandbysAreSpreadEvenlyAndNeverOnTheOwner(t *testing.T) {
	for _, np := range []int32{1, 5, 12, 13, 64} {
		for _, nm := range []int{1, 2, 3, 4, 5, 7} {
			for _, n := range []int{0, 1, 2, 3} {
				t.Run(fmt.Sprintf("p%d_m%d_n%d", np, nm, n), func(t *testing.T) {
					ms, views, gen := settle(t, np, n, 0, simMembers(nm))
					checkMap(t, np, n, ms, views)
					// Members come and go; the spread holds each time.
					ms = append(ms, simMember{id: "m99", addr: "late:80", gen: -1})
					ms, views, gen = settle(t, np, n, gen, ms)
					checkMap(t, np, n, ms, views)
					ms = slices.Delete(ms, 0, 1)
					ms, views, _ = settle(t, np, n, gen, ms)
					checkMap(t, np, n, ms, views)
				})
			}
		}
	}
}

func TestAMovingPartitionBelongsToNobodyUntilTheSecondRound(t *testing.T) {
	ms, views, gen := settle(t, 12, 1, 0, simMembers(3))
	before := checkMap(t, 12, 1, ms, views)
	ms = append(ms, simMember{id: "m03", addr: "host03:80", gen: -1})

	gen++
	round1 := balance(t, 12, 1, gen, ms)
	gm1 := round1["m00"].gm
	var moving []int
	for p, o := range gm1.owner {
		if o < 0 {
			moving = append(moving, p)
		} else {
			require.Equal(t, before.owner[p], o, "partition %d stays where it was or moves through nobody", p)
		}
	}
	require.Len(t, moving, 3, "the new member's three partitions move")
	require.Empty(t, round1["m03"].owned, "nothing is free for the new member in the first round")
	for _, p := range moving {
		require.NotContains(t, gm1.standby[p], 3, "partition %d: standbys are chosen against where it is going", p)
		require.Len(t, gm1.standby[p], 1)
	}

	ms = apply(ms, round1, gen)
	gen++
	round2 := balance(t, 12, 1, gen, ms)
	gm2 := checkMap(t, 12, 1, ms, round2)
	for _, p := range moving {
		require.Equal(t, 3, gm2.owner[p], "the new member owns partition %d in the second round", p)
	}
	require.Len(t, round2["m03"].owned, 3)
	require.Equal(t, gm1.standby, gm2.standby, "standbys do not change between the two rounds")
}

// In the first round of a cooperative move the map names, for each moving
// partition, the member it is going to (its incoming partitions), so that
// the member can restore them while their owners give them up; the second
// round makes them its own and names nothing incoming any more. Here a
// third member joins two that serve all six partitions, without standbys.
func TestAMovingPartitionIsIncomingToItsNextOwnerInTheFirstRound(t *testing.T) {
	ms, _, gen := settle(t, 6, 0, 0, simMembers(2))
	ms = append(ms, simMember{id: "m02", addr: "host02:80", gen: -1})

	gen++
	round1 := balance(t, 6, 0, gen, ms)
	gm1 := checkMap(t, 6, 0, ms, round1)
	var moving []int32
	for p, o := range gm1.owner {
		if o < 0 {
			moving = append(moving, int32(p))
			require.Equal(t, 2, gm1.incoming[p], "partition %d is going to the new member", p)
		} else {
			require.Equal(t, -1, gm1.incoming[p], "partition %d stays where it is", p)
		}
	}
	require.Len(t, moving, 2, "the new member's share moves")
	require.Empty(t, round1["m02"].owned)
	require.Equal(t, moving, gm1.incomingOf(2), "the new member's first view names its incoming partitions")
	require.Empty(t, gm1.incomingOf(0))
	require.Empty(t, gm1.incomingOf(1))
	require.True(t, gm1.moving())

	ms = apply(ms, round1, gen)
	require.Equal(t, moving, ms[2].standby, "the new member advertises its incoming partitions as kept warm")
	gen++
	round2 := balance(t, 6, 0, gen, ms)
	gm2 := checkMap(t, 6, 0, ms, round2)
	require.Equal(t, moving, round2["m02"].owned, "the second round gives it what was incoming")
	require.Equal(t, filled(6, -1), gm2.incoming, "nothing is incoming once nothing moves")
	require.False(t, gm2.moving())
}

// Should a moving partition's owner hold on to it past the first round
// (its revocation missed the second), the partition is still incoming to
// the member it is going to; should the member it was going to leave, it
// goes elsewhere, and is incoming to nobody.
func TestAnIncomingPartitionStaysIncomingUntilItArrivesOrItsTargetLeaves(t *testing.T) {
	ms, _, gen := settle(t, 6, 0, 0, simMembers(2))
	ms = append(ms, simMember{id: "m02", addr: "host02:80", gen: -1})
	gen++
	round1 := balance(t, 6, 0, gen, ms)
	moving := round1["m02"].gm.incomingOf(2)
	require.Len(t, moving, 2)

	// m00 revoked, m01 did not (it missed the round): its partition is
	// still on its way to m02.
	after1 := apply(ms, round1, gen)
	missed := slices.Clone(after1)
	missed[1].owned, missed[1].gen = ms[1].owned, ms[1].gen
	round2 := balance(t, 6, 0, gen+1, missed)
	got := append(slices.Clone(round2["m02"].owned), round2["m02"].gm.incomingOf(2)...)
	slices.Sort(got)
	require.Equal(t, moving, got, "each moving partition is m02's or still incoming to it")

	// m02 leaves before the second round: nothing is incoming to anyone,
	// and the two others own every partition.
	for _, v := range balance(t, 6, 0, gen+1, after1[:2]) {
		require.Equal(t, filled(6, -1), v.gm.incoming)
		require.NotContains(t, v.gm.owner, -1)
	}
}

// A group speaks protocol v1 while any member offers nothing else (a
// rolling deploy from the release before v2): its maps are version 1,
// byte for byte as that release writes them and refuses any other, and
// name nothing incoming. A member of this release reads them.
func TestAMapOfProtocolV1IsWhatTheOlderReleaseReads(t *testing.T) {
	// As the release before v2 encoded this map (its encoder, run once).
	gm := &groupMap{generation: 7, self: 1, addrs: []string{"a:1", "b:2", "c:3"},
		owner: []int{0, -1, 2, 1}, standby: [][]int{{1}, {0, 2}, {}, {0}}}
	golden := []byte{0x1, 0x1, 0xe, 0x3, 0x3, 0x61, 0x3a, 0x31, 0x3, 0x62, 0x3a, 0x32, 0x3, 0x63, 0x3a, 0x33,
		0x4, 0x1, 0x0, 0x3, 0x2, 0x1, 0x1, 0x2, 0x0, 0x2, 0x0, 0x1, 0x0}
	require.Equal(t, golden, encodeGroupMap(gm))
	got, err := decodeGroupMap(golden)
	require.NoError(t, err)
	require.Nil(t, got.incoming, "a version-1 map says nothing of incoming partitions")
	require.Empty(t, got.incomingOf(1))
	require.Equal(t, []byte{0x1, 0x4, 0x6d, 0x65, 0x3a, 0x39, 0x3, 0x1, 0x5, 0xac, 0x2},
		encodeJoinMeta(joinMeta{addr: "me:9", standby: []int32{1, 5, 300}}), "the join metadata is unchanged")

	v1, err := newGroupBalancer("t", 0, wireVersion, nil, nil)
	require.NoError(t, err)
	v2, err := newGroupBalancer("t", 0, mapVersionIncoming, nil, nil)
	require.NoError(t, err)
	require.Equal(t, "compactkv-sticky-v1", v1.ProtocolName(), "the older release's protocol name")
	require.Equal(t, "compactkv-sticky-v2", v2.ProtocolName())

	// The first round of a move under v1: version-1 maps, nothing incoming.
	ms, _, gen := settle(t, 6, 0, 0, simMembers(2))
	ms = append(ms, simMember{id: "m02", addr: "host02:80", gen: -1})
	for _, a := range balanceVersion(t, wireVersion, "t", 6, 0, gen+1, ms) {
		var ca kmsg.ConsumerMemberAssignment
		require.NoError(t, ca.ReadFrom(a.MemberAssignment))
		require.Equal(t, wireVersion, ca.UserData[0], "%s gets a version-1 map", a.MemberID)
		var got syncView
		r, err := newGroupBalancer("t", 0, wireVersion, nil, func(sv syncView) { got = sv })
		require.NoError(t, err)
		_, err = r.ParseSyncAssignment(a.MemberAssignment)
		require.NoError(t, err)
		require.True(t, got.gm.moving(), "partitions move through nobody, as before")
		require.Nil(t, got.gm.incoming)
	}
}

func TestAnOrphanedPartitionGoesToItsStandby(t *testing.T) {
	total := 0
	for seed := range uint64(20) {
		// Start from different histories so that the standbys of the
		// member that goes are spread differently.
		rng := rand.New(rand.NewPCG(seed, 1))
		ms := simMembers(3 + rng.IntN(3))
		ms, views, gen := settle(t, 12, 1, 0, ms)
		gone := rng.IntN(len(ms))
		before := checkMap(t, 12, 1, ms, views)
		ms = slices.Delete(slices.Clone(ms), gone, gone+1)

		gen++
		after := balance(t, 12, 1, gen, ms)
		gm := after[ms[0].id].gm
		// Orphans per receiver are fixed by the engine; within that,
		// as many as possible go to their standby.
		quota := map[string]int{}
		standbyAt := map[string]int{}
		promoted := 0
		for p, o := range before.owner {
			if o != gone {
				continue
			}
			now := ms[gm.owner[p]].id
			quota[now]++
			was := before.standby[p][0]
			if was > gone {
				was--
			}
			standbyAt[ms[was].id]++
			if gm.owner[p] == was {
				promoted++
			}
		}
		want := 0
		for id, q := range quota {
			want += min(q, standbyAt[id])
		}
		require.Equal(t, want, promoted, "seed %d", seed)
		total += promoted
	}
	require.Positive(t, total)
}

func TestStandbysStayWhereTheyWere(t *testing.T) {
	ms, views, gen := settle(t, 12, 1, 0, simMembers(4))
	before := checkMap(t, 12, 1, ms, views)

	// The same members again: nothing changes.
	gen++
	again := balance(t, 12, 1, gen, ms)
	require.Equal(t, before.standby, again["m00"].gm.standby)
	require.Equal(t, before.owner, again["m00"].gm.owner)

	// A fifth member: beyond the partitions that move and the standbys the
	// newcomer must take, standbys stay.
	ms = append(ms, simMember{id: "m04", addr: "host04:80", gen: -1})
	ms, views, _ = settle(t, 12, 1, gen, ms)
	after := checkMap(t, 12, 1, ms, views)
	moved, kept := 0, 0
	for p := range 12 {
		if after.owner[p] != before.owner[p] {
			moved++
		}
		if after.standby[p][0] == before.standby[p][0] {
			kept++
		}
	}
	newcomer := len(after.standbyOf(4))
	require.GreaterOrEqual(t, kept, 12-moved-newcomer, "moved %d, newcomer has %d standbys", moved, newcomer)
}

func TestBalanceIsDeterministic(t *testing.T) {
	ms, _, gen := settle(t, 12, 2, 0, simMembers(5))
	ms = append(ms[1:], simMember{id: "m77", addr: "x:1", gen: -1})
	a := balanceRaw(t, "t", 12, 2, gen+1, ms)
	for range 5 {
		b := balanceRaw(t, "t", 12, 2, gen+1, ms)
		require.Equal(t, len(a), len(b))
		for i := range a {
			require.Equal(t, a[i].MemberID, b[i].MemberID)
			require.True(t, bytes.Equal(a[i].MemberAssignment, b[i].MemberAssignment))
		}
	}
}

func TestTheEncodingsRefuseGarbage(t *testing.T) {
	gm := &groupMap{generation: 7, self: 1, addrs: []string{"a:1", "b:2", "c:3"},
		owner: []int{0, -1, 2, 1}, standby: [][]int{{1}, {0, 2}, {}, {0}}}
	enc := encodeGroupMap(gm)
	got, err := decodeGroupMap(enc)
	require.NoError(t, err)
	require.Equal(t, gm.generation, got.generation)
	require.Equal(t, gm.self, got.self)
	require.Equal(t, gm.addrs, got.addrs)
	require.Equal(t, gm.owner, got.owner)
	require.Equal(t, [][]int{{1}, {0, 2}, nil, {0}}, got.standby)
	require.Equal(t, map[int32]string{0: "a:1", 1: "", 2: "c:3", 3: "b:2"}, got.owners())

	jm := joinMeta{addr: "me:9", standby: []int32{1, 5, 300}}
	jenc := encodeJoinMeta(jm)
	jgot, err := decodeJoinMeta(jenc)
	require.NoError(t, err)
	require.Equal(t, jm, jgot)

	for i := range enc {
		_, err := decodeGroupMap(enc[:i])
		require.ErrorIs(t, err, errBadGroupMap, "truncated to %d bytes", i)
	}
	for i := range jenc {
		_, err := decodeJoinMeta(jenc[:i])
		require.ErrorIs(t, err, errBadJoinMeta, "truncated to %d bytes", i)
	}
	_, err = decodeGroupMap(append(slices.Clone(enc), 0))
	require.ErrorContains(t, err, "1 trailing bytes")
	_, err = decodeJoinMeta(append([]byte{2}, jenc[1:]...))
	require.ErrorContains(t, err, "version 2, want 1")

	// Version 2: the same, then where the moving partitions go.
	gm.incoming = []int{-1, 1, -1, -1}
	enc2 := encodeGroupMap(gm)
	require.Equal(t, mapVersionIncoming, enc2[0])
	require.Equal(t, append([]byte{mapVersionIncoming}, enc[1:]...), enc2[:len(enc)])
	got, err = decodeGroupMap(enc2)
	require.NoError(t, err)
	require.Equal(t, gm.incoming, got.incoming)
	require.Equal(t, []int32{1}, got.incomingOf(1))
	require.Empty(t, got.incomingOf(0))
	for i := range enc2 {
		_, err := decodeGroupMap(enc2[:i])
		require.ErrorIs(t, err, errBadGroupMap, "truncated to %d bytes", i)
	}
	_, err = decodeGroupMap(append([]byte{3}, enc[1:]...))
	require.ErrorContains(t, err, "version 3, want 1 or 2")
	gm.incoming = nil

	bad := func(g *groupMap) error { _, err := decodeGroupMap(encodeGroupMap(g)); return err }
	require.ErrorContains(t, bad(&groupMap{addrs: []string{"a", "b"}, owner: []int{0}, standby: [][]int{nil}, incoming: []int{1}}),
		"incoming to member 1 while it has an owner")
	require.ErrorContains(t, bad(&groupMap{addrs: []string{"a", "b"}, owner: []int{-1}, standby: [][]int{{1}}, incoming: []int{1}}),
		"that member is its standby")
	require.ErrorContains(t, bad(&groupMap{addrs: []string{"a", "b"}, owner: []int{-1}, standby: [][]int{nil}, incoming: []int{2}}),
		"incoming member 2 is not one of 2 members")
	require.ErrorContains(t, bad(&groupMap{self: 3, addrs: []string{"a"}}), "self 3 is not one of 1 members")
	require.ErrorContains(t, bad(&groupMap{addrs: []string{"a"}, owner: []int{1}, standby: [][]int{nil}}), "owner 1 is not one of 1 members")
	require.ErrorContains(t, bad(&groupMap{addrs: []string{"a", "b"}, owner: []int{0}, standby: [][]int{{0}}}), "is its owner")
	require.ErrorContains(t, bad(&groupMap{addrs: []string{"a", "b"}, owner: []int{-1}, standby: [][]int{{1, 1}}}), "already its standby")
	require.ErrorContains(t, bad(&groupMap{addrs: []string{"a"}, owner: []int{-1}, standby: [][]int{{4}}}), "member index 4")
	_, err = decodeJoinMeta(encodeJoinMeta(joinMeta{addr: "a", standby: []int32{3, 3}}))
	require.ErrorContains(t, err, "not strictly ascending")
	_, err = decodeJoinMeta(encodeJoinMeta(joinMeta{addr: string(make([]byte, maxAdvertiseLen+1))}))
	require.ErrorContains(t, err, "at most 1024")

	// Random bytes never panic, and what they decode to is consistent.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		if rng.IntN(2) == 0 && len(b) > 0 {
			b[0] = wireVersion + byte(rng.IntN(2))
		}
		if g, err := decodeGroupMap(b); err == nil {
			require.Less(t, g.self, len(g.addrs))
			require.True(t, bytes.Equal(b, encodeGroupMap(g)), "%x decodes to what encodes back", b)
		}
		_, _ = decodeJoinMeta(b)
	}

	// A member refuses an assignment whose map disagrees with its
	// partitions, and takes one without a map as it is.
	r, err := newGroupBalancer("t", 0, mapVersionIncoming, nil, nil)
	require.NoError(t, err)
	a := kmsg.NewConsumerMemberAssignment()
	at := kmsg.NewConsumerMemberAssignmentTopic()
	at.Topic, at.Partitions = "t", []int32{0, 1}
	a.Topics = append(a.Topics, at)
	a.UserData = enc // member 1 owns partition 3 in this map
	_, err = r.ParseSyncAssignment(a.AppendTo(nil))
	require.ErrorIs(t, err, errBadGroupMap)
	a.UserData = []byte{1, 2, 3}
	_, err = r.ParseSyncAssignment(a.AppendTo(nil))
	require.ErrorIs(t, err, errBadGroupMap)
	a.UserData = nil
	got2, err := r.ParseSyncAssignment(a.AppendTo(nil))
	require.NoError(t, err)
	require.Equal(t, []int32{0, 1}, got2["t"])
	got2, err = r.ParseSyncAssignment(nil)
	require.NoError(t, err)
	require.Empty(t, got2)
}

func FuzzDecodeGroupMap(f *testing.F) {
	f.Add(encodeGroupMap(&groupMap{generation: 3, addrs: []string{"a", "b"}, owner: []int{0, 1}, standby: [][]int{{1}, {0}}}))
	f.Add(encodeGroupMap(&groupMap{generation: 3, addrs: []string{"a", "b"}, owner: []int{0, -1}, standby: [][]int{{1}, nil},
		incoming: []int{-1, 1}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if g, err := decodeGroupMap(b); err == nil && !bytes.Equal(b, encodeGroupMap(g)) {
			t.Fatalf("%x decodes to %+v, which encodes differently", b, g)
		}
	})
}

func intersect(a, b []int32) []int32 {
	var out []int32
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
