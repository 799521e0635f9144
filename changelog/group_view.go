package changelog

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Assignment is one member's view of the group at one generation.
type Assignment struct {
	// Generation is the group generation the view belongs to. Views come
	// in non-decreasing generation order; a lost view keeps the
	// generation of the view it replaces.
	Generation int32
	// Owned are the partitions this member serves, ascending.
	Owned []int32
	// Standby are the partitions this member keeps warm (follows, does
	// not serve), ascending. Never overlaps Owned.
	Standby []int32
	// Incoming are the partitions of Standby that the group is moving to
	// this member, ascending: in the first round of a cooperative
	// rebalance they belong to nobody (Owners says "") while their owners
	// give them up, and the second round (about 100 ms later when every
	// member answers promptly, a heartbeat interval or more otherwise)
	// makes them Owned, unless the group changed meanwhile (they then go
	// wherever the group says, as any standby). Kept warm meanwhile, so
	// that the member can start restoring them before they are its. Always
	// empty while the group speaks protocol v1 (a rolling deploy from a
	// release that knows no other: see JoinGroup).
	Incoming []int32
	// Owners maps every partition of the topic to its owner's advertised
	// address. It is "" while a partition has no owner: in the first
	// round of a cooperative rebalance a partition moving from one member
	// to another belongs to neither (about a heartbeat interval, until
	// the second round), and in a lost view this member's own partitions
	// are "" too. A view that came without the group's map (a member can
	// miss a generation's map) keeps the others' entries of the previous
	// view.
	Owners map[int32]string
	// Lost is set when this member may no longer be in the group: its
	// session expired, it was fenced, or the coordinator has not answered
	// its heartbeats for SessionTimeout minus HeartbeatInterval (so the
	// member gives its partitions up before the broker can hand them to
	// another). Owned and Standby are then empty. The member keeps trying
	// to rejoin; the next assignment clears Lost.
	Lost bool
}

// clone returns a deep copy.
func (a Assignment) clone() Assignment {
	a.Owned = slices.Clone(a.Owned)
	a.Standby = slices.Clone(a.Standby)
	a.Incoming = slices.Clone(a.Incoming)
	a.Owners = maps.Clone(a.Owners)
	return a
}

func (a Assignment) equal(b Assignment) bool {
	return a.Generation == b.Generation && a.Lost == b.Lost &&
		slices.Equal(a.Owned, b.Owned) && slices.Equal(a.Standby, b.Standby) &&
		slices.Equal(a.Incoming, b.Incoming) && maps.Equal(a.Owners, b.Owners)
}

// without returns a with nothing owned or kept warm, this member's
// partitions unowned in Owners.
func (a Assignment) without(lost bool) Assignment {
	b := Assignment{Generation: a.Generation, Owners: maps.Clone(a.Owners), Lost: lost}
	for _, p := range a.Owned {
		b.Owners[p] = ""
	}
	return b
}

// deliver makes the next view from the current one (under m.mu) and, if it
// differs, publishes it and hands it to OnAssign, all under deliverMu so
// that views are handed over one at a time and in the order they were made.
func (m *Membership) deliver(next func(cur Assignment) (Assignment, bool)) {
	m.deliverMu.Lock()
	defer m.deliverMu.Unlock()
	m.mu.Lock()
	a, ok := next(m.cur)
	ok = ok && !a.equal(m.cur)
	if ok {
		m.cur = a
		m.latest.Store(new(a.clone()))
	}
	joined := m.joined
	m.mu.Unlock()
	if !ok {
		return
	}
	if m.cfg.OnAssign != nil {
		m.cfg.OnAssign(a.clone())
	}
	if joined && !a.Lost {
		m.firstOnce.Do(func() { close(m.first) })
	}
}

// fromSync delivers the view of the last SyncGroup answer, if one is
// waiting. Called under m.mu through deliver.
func (m *Membership) fromSync(cur Assignment, generation int32) (Assignment, bool) {
	sv := m.pending
	if sv == nil {
		return cur, false
	}
	m.pending = nil
	wasMoving := m.moving
	m.moving = sv.gm != nil && sv.gm.moving()
	m.hurry = m.moving && !wasMoving
	a := Assignment{Generation: generation, Owned: sv.owned}
	if sv.gm != nil {
		a.Owners = sv.gm.owners()
		a.Incoming = sv.gm.incomingOf(sv.gm.self)
		a.Standby = slices.Sorted(slices.Values(append(sv.gm.standbyOf(sv.gm.self), a.Incoming...)))
	} else { // no map this generation: keep what we knew of the others
		a.Owners = maps.Clone(cur.Owners)
		if a.Owners == nil {
			a.Owners = make(map[int32]string)
		}
		for _, p := range cur.Owned {
			a.Owners[p] = ""
		}
		for _, p := range sv.owned {
			a.Owners[p] = m.cfg.Advertise
		}
	}
	m.joined = true
	return a, true
}

// onRevoked runs first in a session that takes partitions away (before the
// member rejoins to hand them back), at the end of every session, and when
// the member leaves.
func (m *Membership) onRevoked(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
	_, gen := cl.GroupMetadata()
	m.deliver(func(cur Assignment) (Assignment, bool) {
		switch {
		case m.pending != nil:
			return m.fromSync(cur, gen)
		case m.closing:
			return cur.without(false), m.joined
		case m.joined && len(lost[m.cfg.Topic]) > 0:
			a := cur.clone()
			a.Owned = slices.DeleteFunc(a.Owned, func(p int32) bool { return slices.Contains(lost[m.cfg.Topic], p) })
			for _, p := range lost[m.cfg.Topic] {
				a.Owners[p] = ""
			}
			return a, true
		}
		return cur, false
	})
}

// onAssigned runs once in every session, after onRevoked and before any
// offsets are fetched.
//
// A view of the first round of a cooperative rebalance (a partition has no
// owner) that reaches this member here gave it nothing up (onRevoked took
// the view of a member that gives partitions up, and kgo rejoins such a
// member once it has): it rejoins hurryDelay later, so that the second
// round, which waits for every member, does not wait for this one's next
// heartbeat. Only for the first view of a move, and only if no other
// generation came meanwhile: a rejoin that reached the broker before a
// slow member's SyncGroup would keep that member from ever seeing the map
// it must give partitions up by, and forcing again at every generation
// would then never let the group settle (a rebalance storm). Views that
// go on moving wait for the heartbeats, as without the hurry.
func (m *Membership) onAssigned(_ context.Context, cl *kgo.Client, _ map[string][]int32) {
	cl.PauseFetchTopics(m.cfg.Topic)
	_, gen := cl.GroupMetadata()
	var hurry bool
	m.deliver(func(cur Assignment) (Assignment, bool) {
		a, ok := m.fromSync(cur, gen)
		hurry, m.hurry = m.hurry && ok, false
		return a, ok
	})
	if hurry {
		time.AfterFunc(hurryDelay, func() {
			if _, now := cl.GroupMetadata(); now == gen {
				cl.ForceRebalance()
			}
		})
	}
}

// hurryDelay is how long after the first view of a move a member that
// gave nothing up waits before it rejoins (onAssigned): long enough for the
// other members' SyncGroup requests of that generation to reach the broker
// first.
const hurryDelay = 100 * time.Millisecond

// onLost runs when a session ended in an error: expired, fenced, or the
// coordinator out of reach for longer than the retries allow.
func (m *Membership) onLost(context.Context, *kgo.Client, map[string][]int32) {
	m.deliver(func(cur Assignment) (Assignment, bool) {
		m.pending = nil
		return cur.without(true), m.joined && !m.closing && !cur.Lost
	})
}

// joinMeta is what this member advertises when it joins. Its standbys
// include its incoming partitions: the leader then prefers it for them
// should they have no owner when it balances (promoteStandbys).
func (m *Membership) joinMeta() joinMeta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return joinMeta{addr: m.cfg.Advertise, standby: slices.Clone(m.cur.Standby)}
}

// synced keeps a SyncGroup answer until the session's callbacks deliver it.
func (m *Membership) synced(sv syncView) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending = &sv
	m.wdLost, m.forced = false, false
}
