package kvstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
)

// member is one store of a partitioned-mode group in a test.
type member struct {
	addr     string
	dir      string
	s        *kvstore.Store[User]
	restores *restoreCount
	crash    *embedded.Crasher
}

// restoreCount counts, per partition, the restores that read a partition
// from its start (OnRestoreStart of a full or partition restore).
type restoreCount struct {
	mu sync.Mutex
	n  map[int32]int
}

func (c *restoreCount) OnRestoreStart(rs kvstore.RestoreStart) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rs.Partitions {
		c.n[r.Partition]++
	}
}
func (c *restoreCount) OnBatchRestored(kvstore.BatchRestored) {}
func (c *restoreCount) OnRestoreEnd(kvstore.RestoreStats)     {}
func (c *restoreCount) of(p int32) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[p]
}

// openMembers opens len(addrs) members of the test's group at once (as a
// deployment starts them), each with its own cache directory.
func (e *env) openMembers(addrs []string, extra ...kvstore.Option) []*member {
	e.t.Helper()
	ms := make([]*member, len(addrs))
	var wg sync.WaitGroup
	errs := make([]error, len(addrs))
	for i, a := range addrs {
		ms[i] = &member{addr: a, dir: e.t.TempDir()}
		wg.Go(func() { errs[i] = e.start(ms[i], extra...) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(e.t, err)
	}
	return ms
}

// start opens m's store (again), in the test's group with a 6s session.
func (e *env) start(m *member, extra ...kvstore.Option) error {
	m.restores, m.crash = &restoreCount{n: map[int32]int{}}, &embedded.Crasher{}
	opts := append([]kvstore.Option{kvstore.Group(e.topic + "-members"), kvstore.Advertise(m.addr),
		kvstore.SessionTimeout(6 * time.Second), kvstore.OnRestore(m.restores),
		kvstore.KafkaOpts(kgo.Dialer(m.crash.DialContext))}, extra...)
	s, err := kvstore.Open[User](ctxT(e.t), e.topic, e.opts(m.dir, opts...)...)
	if err == nil {
		m.s = s
		e.t.Cleanup(func() { s.Close() })
	}
	return err
}

// settled says whether the live members split every partition among
// themselves, each owned partition served and each standby warm, and
// every member agreeing on every owner; it returns the owner of each
// partition.
func settled(live []*member, partitions int) (map[int32]*member, bool) {
	owners := map[int32]*member{}
	for _, m := range live {
		for _, ps := range m.s.Stats().Partitions {
			if ps.Role == kvstore.RoleStandby && ps.State != kvstore.PartitionFollowing {
				return nil, false
			}
			if ps.Role == kvstore.RoleOwner {
				if ps.State != kvstore.PartitionFollowing || owners[ps.Partition] != nil {
					return nil, false
				}
				owners[ps.Partition] = m
			}
		}
	}
	if len(owners) != partitions {
		return nil, false
	}
	for _, m := range live {
		for _, ps := range m.s.Stats().Partitions {
			if ps.Owner != owners[ps.Partition].addr {
				return nil, false
			}
		}
	}
	return owners, true
}

// awaitSettled waits until the live members have settled (settled).
func awaitSettled(t *testing.T, live []*member, partitions int, within time.Duration) map[int32]*member {
	t.Helper()
	var owners map[int32]*member
	require.Eventually(t, func() bool {
		var ok bool
		owners, ok = settled(live, partitions)
		return ok
	}, within, 10*time.Millisecond, "the members never settled on one owner per partition")
	return owners
}

// requireRouted checks every key of model through every live member: its
// owner answers with the model's value, the others refuse with a
// NotOwnerError naming the owner. Each member first passes a read barrier
// (Sync), since the model's last writes may still be on their way to it.
func requireRouted(t *testing.T, live []*member, owners map[int32]*member, model map[string]User) {
	t.Helper()
	ctx := ctxT(t)
	for _, m := range live {
		_, err := m.s.Sync(ctx)
		require.NoError(t, err, "member %s: read barrier", m.addr)
	}
	for key, want := range model {
		for _, m := range live {
			p, addr, local := m.s.Owner(key)
			owner := owners[p]
			require.Equal(t, owner.addr, addr, "member %s: owner of %q", m.addr, key)
			got, ok, err := m.s.Get(ctx, key)
			if local {
				require.Same(t, owner, m)
				require.NoError(t, err)
				require.True(t, ok, "%q missing at its owner %s", key, m.addr)
				require.Equal(t, want, got)
				continue
			}
			var noe *kvstore.NotOwnerError
			require.ErrorAs(t, err, &noe, "member %s, key %q", m.addr, key)
			require.ErrorIs(t, err, kvstore.ErrNotServed)
			require.Equal(t, owner.addr, noe.Owner)
			require.Equal(t, p, noe.Partition)
		}
	}
}

// seed writes n keys through a global-mode store and returns them.
func (e *env) seedKeys(w *kvstore.Store[User], tag string, n int) map[string]User {
	e.t.Helper()
	model := map[string]User{}
	for i := range n {
		k := fmt.Sprintf("%s-%03d", tag, i)
		model[k] = User{FirstName: k}
		acked(e.t)(w.Put(ctxT(e.t), k, model[k]))
	}
	return model
}

// threeMembers opens three members a, b, c of a group on a new topic of 12
// partitions holding n keys (written through a global-mode store), and
// waits until they have settled.
func threeMembers(t *testing.T, n int, extra ...kvstore.Option) (e *env, model map[string]User, ms []*member, owners map[int32]*member) {
	e = newEnv(t)
	model = e.seedKeys(e.open("", kvstore.Partitions(12)), "k", n)
	ms = e.openMembers([]string{"a:1", "b:1", "c:1"}, extra...)
	return e, model, ms, awaitSettled(t, ms, 12, 40*time.Second)
}

// Three members split the topic's partitions fairly, each restoring and
// serving its own only, and every key is answered by its owner and refused
// by the others with the owner's address.
func TestThreeMembersSplitThePartitionsAndRouteEveryKeyToItsOwner(t *testing.T) {
	e, model, ms, owners := threeMembers(t, 300)
	for _, m := range ms {
		n := 0
		for _, ps := range m.s.Stats().Partitions {
			if ps.Role == kvstore.RoleOwner {
				n++
			} else {
				require.Contains(t, []kvstore.PartitionState{kvstore.PartitionIdle}, ps.State,
					"a partition it neither owns nor stands by for is not followed")
			}
		}
		require.Equal(t, 4, n, "member %s owns a fair share", m.addr)
		require.Equal(t, e.topic+"-members", m.s.Stats().Group.Group)
	}
	requireRouted(t, ms, owners, model)

	// A write through any member reaches the key's owner.
	pos := acked(t)(ms[0].s.Put(ctxT(t), "new", User{FirstName: "new"}))
	p, _, _ := ms[0].s.Owner("new")
	require.NoError(t, owners[p].s.WaitFor(ctxT(t), pos))
	model["new"] = User{FirstName: "new"}
	requireRouted(t, ms, owners, model)

	// A member's Scan lists its own partitions' keys.
	seen := 0
	for _, m := range ms {
		for _, err := range m.s.Scan(ctxT(t), "") {
			require.NoError(t, err)
			seen++
		}
	}
	require.Equal(t, len(model), seen, "the members' scans together list every key once")
}

// A member that leaves hands its partitions to their standbys, which serve
// them at once without reading them from the start; when it comes back
// with its cache, the partitions it gets restore from their checkpoints.
func TestALeavingMembersPartitionsGoToTheirStandbysAndComeBackAsDeltas(t *testing.T) {
	e := newEnv(t)
	w := e.open("", kvstore.Partitions(12))
	model := e.seedKeys(w, "k", 200)
	ms := e.openMembers([]string{"a:1", "b:1", "c:1"}, kvstore.Standbys(1))
	owners := awaitSettled(t, ms, 12, 40*time.Second)
	gone := ms[2]
	var itsPartitions []int32
	for p, m := range owners {
		if m == gone {
			itsPartitions = append(itsPartitions, p)
		}
	}
	held := map[int32]bool{} // the partitions whose cache it keeps: owned or standby
	for _, ps := range gone.s.Stats().Partitions {
		held[ps.Partition] = ps.Role != kvstore.RoleNone
	}
	restoresBefore := map[*member]map[int32]int{}
	for _, m := range ms[:2] {
		restoresBefore[m] = map[int32]int{}
		for p := range int32(12) {
			restoresBefore[m][p] = m.restores.of(p)
		}
	}

	require.NoError(t, gone.s.Close())
	live := ms[:2]
	for k, v := range e.seedKeys(w, "while-away", 50) {
		model[k] = v
	}
	owners = awaitSettled(t, live, 12, 40*time.Second)
	for _, p := range itsPartitions {
		m := owners[p]
		require.Equal(t, restoresBefore[m][p], m.restores.of(p),
			"partition %d: its standby %s took it over without reading it from the start", p, m.addr)
	}
	requireRouted(t, live, owners, model)

	// Back, with the cache it left behind: it gets partitions again, and
	// restores those it held before from their checkpoints (no restore
	// from the start); one it never held is read from the start.
	require.NoError(t, e.start(gone, kvstore.Standbys(1)))
	live = ms
	owners = awaitSettled(t, live, 12, 40*time.Second)
	deltas := 0
	for p, ps := range gone.s.Stats().Partitions {
		if ps.Role == kvstore.RoleNone || !held[int32(p)] {
			continue
		}
		require.Zero(t, gone.restores.of(int32(p)), "partition %d, held before, came back as a delta", p)
		deltas++
	}
	require.Positive(t, deltas, "it took back some of what it held")
	requireRouted(t, live, owners, model)
}

// A member cut off from the brokers (a crash, as far as the group can
// tell) stops serving at once; once its session expires the others take
// its partitions and every key is answered again.
func TestACrashedMembersPartitionsMoveAndItStopsServing(t *testing.T) {
	_, model, ms, owners := threeMembers(t, 120)
	dead := ms[0]
	var key string
	for k := range model {
		if p, _, _ := dead.s.Owner(k); owners[p] == dead {
			key = k
			break
		}
	}
	require.NotEmpty(t, key)

	crashed := time.Now()
	dead.crash.Crash()
	require.Eventually(t, func() bool {
		_, _, err := dead.s.Get(ctxT(t), key)
		return errors.Is(err, kvstore.ErrNotServed)
	}, 10*time.Second, 10*time.Millisecond, "a member that lost the group stops serving")

	owners = awaitSettled(t, ms[1:], 12, 40*time.Second)
	t.Logf("every partition served again %v after the crash", time.Since(crashed).Round(time.Millisecond))
	requireRouted(t, ms[1:], owners, model)
}

// A rebalance in the middle of a restore: a member restoring its partitions
// loses some of them to a member that joins meanwhile. The restores of the
// partitions it lost finish or stop without it serving them, and the two
// settle with every key routed to its owner.
func TestARebalanceInTheMiddleOfARestoreSettles(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("holding fetches")
	w := e.open("", kvstore.Partitions(6))
	model := e.seedKeys(w, "k", 120)
	const aMaxWait = 781 // ms: marks a's fetches, the ones to hold
	held, release := holdFetches(e.cluster.Kafka(), aMaxWait)
	a, b := &member{addr: "a:1", dir: t.TempDir()}, &member{addr: "b:1", dir: t.TempDir()}
	opened := make(chan error, 1)
	go func() { opened <- e.start(a, kvstore.KafkaOpts(kgo.FetchMaxWait(aMaxWait*time.Millisecond))) }()
	// a owns every partition and is restoring them, its reads held.
	require.Eventually(t, func() bool { return held.Load() >= 1 }, 10*time.Second, time.Millisecond)

	require.NoError(t, e.start(b)) // b joins: the group moves partitions from a to b
	close(release)
	require.NoError(t, <-opened)
	ms := []*member{a, b}
	owners := awaitSettled(t, ms, 6, 40*time.Second)
	n := map[*member]int{}
	for _, m := range owners {
		n[m]++
	}
	require.Equal(t, 3, n[a])
	require.Equal(t, 3, n[b])
	requireRouted(t, ms, owners, model)
	for _, m := range ms { // the restores of partitions given up do not make them look restored or restoring
		for _, ps := range m.s.Stats().Partitions {
			if ps.Role == kvstore.RoleNone {
				require.Equal(t, kvstore.PartitionIdle, ps.State, "member %s, partition %d, given up", m.addr, ps.Partition)
			}
		}
	}
}

// In partitioned mode WaitFor and Sync of a partition a member does not
// follow fail at once, naming the owner, instead of waiting; Only narrows a
// Position to the partitions a member serves, keeping its topic.
func TestWaitForAndSyncOfAPartitionNotFollowedFailAtOnce(t *testing.T) {
	e := newEnv(t)
	w := e.open("", kvstore.Partitions(6))
	ms := e.openMembers([]string{"a:1", "b:1"})
	owners := awaitSettled(t, ms, 6, 40*time.Second)
	ctx := ctxT(t)
	var session kvstore.Position
	for i := range 40 {
		session, _ = session.Merge(acked(t)(w.Put(ctx, fmt.Sprint("k", i), User{})))
	}
	require.Len(t, session.Offsets(), 6)
	a := ms[0]
	var mine []int32
	for p, m := range owners {
		if m == a {
			mine = append(mine, p)
		}
	}
	var noe *kvstore.NotOwnerError
	require.ErrorAs(t, a.s.WaitFor(ctx, session), &noe)
	require.Equal(t, ms[1].addr, noe.Owner)
	require.NoError(t, a.s.WaitFor(ctx, session.Only(mine...)))
	require.Len(t, session.Only(mine...).Offsets(), 3)
	require.True(t, session.Only(99).IsZero())
	require.NoError(t, a.s.WaitFor(ctx, session.Only(99)))

	other, err := kvstore.Open[User](ctx, "other-topic", e.opts("")...)
	require.NoError(t, err)
	defer other.Close()
	require.ErrorIs(t, other.WaitFor(ctx, session.Only(99)), kvstore.ErrForeignPosition,
		"a narrowed token keeps its topic")

	_, err = a.s.Sync(ctx) // every partition it follows
	require.NoError(t, err)
	for i := range 40 {
		k := fmt.Sprint("k", i)
		p, _, local := a.s.Owner(k)
		_, err := a.s.Sync(ctx, k)
		if local {
			require.NoError(t, err)
			continue
		}
		require.ErrorAs(t, err, &noe)
		require.Equal(t, owners[p].addr, noe.Owner)
	}
}

// A wait for a partition that a rebalance takes away while the member is
// behind on it ends with a NotOwnerError naming the new owner, instead of
// waiting out its context.
func TestAWaitEndsWhenItsPartitionIsTakenAway(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	w := e.open("", kvstore.Partitions(6))
	a := &member{addr: "a:1", dir: t.TempDir()}
	require.NoError(t, e.start(a))
	awaitSettled(t, []*member{a}, 6, 40*time.Second)
	// Another producer's transaction, open on every partition, keeps a
	// from applying what comes after it.
	tx, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.DefaultProduceTopic(e.topic),
		kgo.TransactionalID(e.topic+"-tx"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	defer tx.Close()
	require.NoError(t, tx.BeginTransaction())
	for p := range int32(6) {
		require.NoError(t, tx.ProduceSync(ctx, &kgo.Record{Partition: p, Key: []byte("tx"), Value: nil}).FirstErr())
	}
	var all kvstore.Position
	for i := range 60 {
		all, _ = all.Merge(acked(t)(w.Put(ctx, fmt.Sprint("k", i), User{})))
	}
	require.Len(t, all.Offsets(), 6)
	waited := make(chan error, 1)
	go func() { waited <- a.s.WaitFor(ctx, all) }()

	b := &member{addr: "b:1", dir: t.TempDir()}
	require.NoError(t, e.start(b)) // takes half of a's partitions
	select {
	case err := <-waited:
		var noe *kvstore.NotOwnerError
		require.ErrorAs(t, err, &noe)
		require.Contains(t, []string{"", "b:1"}, noe.Owner, "no owner while it moves, then b")
	case <-time.After(15 * time.Second):
		t.Fatal("the wait did not end when its partition went to another member")
	}
	require.NoError(t, tx.EndTransaction(ctx, kgo.TryAbort))
}

// Damage met while running in partitioned mode starts an empty cache file
// and rebuilds only the partitions this member keeps, not the whole topic.
func TestDamageInPartitionedModeRebuildsOnlyThePartitionsKept(t *testing.T) {
	e := newEnv(t)
	w := e.open("", kvstore.Partitions(6))
	model := e.seedKeys(w, "k", 120)
	ms := e.openMembers([]string{"a:1", "b:1"})
	owners := awaitSettled(t, ms, 6, 40*time.Second)
	a := ms[0]
	before := map[int32]int{}
	for p := range int32(6) {
		before[p] = a.restores.of(p)
	}
	kvstore.MarkDamaged(a.s)
	require.Eventually(t, func() bool {
		for p := range int32(6) {
			if owners[p] == a && a.restores.of(p) == before[p] {
				return false
			}
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, "the partitions a keeps are rebuilt")
	require.Equal(t, int64(1), a.s.Stats().Guards[kvstore.GuardCorrupt])
	owners = awaitSettled(t, ms, 6, 40*time.Second)
	for p := range int32(6) {
		if owners[p] == a {
			require.Greater(t, a.restores.of(p), before[p], "partition %d, kept, is rebuilt", p)
		} else {
			require.Equal(t, before[p], a.restores.of(p), "partition %d, another member's, is not read", p)
		}
	}
	requireRouted(t, ms, owners, model)
}

// Static membership: a member with an InstanceID that restarts within the
// session timeout takes its own partitions back, from its cache, and no
// other member's partition moves.
func TestAStaticMemberThatRestartsTakesItsPartitionsBack(t *testing.T) {
	e := newEnv(t)
	model := e.seedKeys(e.open("", kvstore.Partitions(6)), "k", 60)
	ms := make([]*member, 3)
	var wg sync.WaitGroup
	for i, a := range []string{"a:1", "b:1", "c:1"} {
		ms[i] = &member{addr: a, dir: t.TempDir()}
		wg.Go(func() { require.NoError(t, e.start(ms[i], kvstore.InstanceID(a))) })
	}
	wg.Wait()
	before := awaitSettled(t, ms, 6, 40*time.Second)

	c := ms[2]
	require.NoError(t, c.s.Close()) // a static member does not leave
	require.NoError(t, e.start(c, kvstore.InstanceID(c.addr)))
	after := awaitSettled(t, ms, 6, 40*time.Second)
	for p, m := range before {
		require.Same(t, m, after[p], "partition %d stays with %s", p, m.addr)
		if m == c {
			require.Zero(t, c.restores.of(p), "partition %d comes back from c's cache", p)
		}
	}
	requireRouted(t, ms, after, model)
}

// restoreLog records every restore a store reports to its listener.
type restoreLog struct {
	mu     sync.Mutex
	starts []kvstore.RestoreStart
	ends   []kvstore.RestoreStats
}

func (l *restoreLog) OnRestoreStart(rs kvstore.RestoreStart) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.starts = append(l.starts, rs)
}
func (l *restoreLog) OnBatchRestored(kvstore.BatchRestored) {}
func (l *restoreLog) OnRestoreEnd(st kvstore.RestoreStats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ends = append(l.ends, st)
}
func (l *restoreLog) get() ([]kvstore.RestoreStart, []kvstore.RestoreStats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.starts), slices.Clone(l.ends)
}

// rangesOf returns the partitions a restore reads, ascending.
func rangesOf(rs kvstore.RestoreStart) []int32 {
	var ps []int32
	for _, r := range rs.Partitions {
		ps = append(ps, r.Partition)
	}
	slices.Sort(ps)
	return ps
}

// requireOnePass checks that log holds one restore, of exactly the
// partitions parts, each read from its log start to its end as end lists
// them (nothing was written since), every record once; and that it is the
// store's last restore.
func requireOnePass(t *testing.T, m *member, log *restoreLog, parts []int32, start, end map[int32]int64) {
	t.Helper()
	starts, ends := log.get()
	require.Len(t, starts, 1, "%s restores its partitions in one pass", m.addr)
	require.Equal(t, "partition", starts[0].Mode)
	require.Equal(t, parts, rangesOf(starts[0]), "%s reads exactly the partitions it owns", m.addr)
	var want int64
	for _, r := range starts[0].Partitions {
		require.Equal(t, start[r.Partition], r.Start, "partition %d read from its log start", r.Partition)
		require.Equal(t, end[r.Partition], r.End, "partition %d read to its end", r.Partition)
		want += end[r.Partition] - start[r.Partition]
	}
	// Open's own end comes first: in partitioned mode it restores nothing up front.
	require.Len(t, ends, 2)
	require.Zero(t, ends[0].Records)
	require.Equal(t, "partition", ends[1].Mode)
	require.Equal(t, want, ends[1].Records, "each record of the partitions read once")
	require.Equal(t, ends[1], m.s.Stats().Restore)
}

// ownedBy returns the partitions m owns, ascending.
func ownedBy(m *member) []int32 {
	var owned []int32
	for _, ps := range m.s.Stats().Partitions {
		if ps.Role == kvstore.RoleOwner {
			owned = append(owned, ps.Partition)
		}
	}
	return owned
}

// A member starting with an empty cache restores the partitions it is
// given in one pass, as a full restore does: one restore of exactly the
// partitions it owns, each from its log start to its end, not one restore
// per partition. So does the first member (all of them), and one joining
// it (its half). Each serves every key of its partitions as written: an
// overwritten key with its last value, a deleted one not at all.
func TestAMembersPartitionsAreRestoredInOnePass(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	w := e.open("", kvstore.Partitions(6))
	model := e.seedKeys(w, "k", 240)
	deleted := map[string]bool{}
	for i := 0; i < 240; i += 3 {
		k := fmt.Sprintf("k-%03d", i)
		model[k] = User{FirstName: k, LastName: "again"}
		acked(t)(w.Put(ctx, k, model[k]))
	}
	for i := 1; i < 240; i += 5 {
		k := fmt.Sprintf("k-%03d", i)
		delete(model, k)
		deleted[k] = true
		acked(t)(w.Delete(ctx, k))
	}
	end, zero := e.endOffsets(), map[int32]int64{}

	a, aLog := &member{addr: "a:1", dir: t.TempDir()}, &restoreLog{}
	require.NoError(t, e.start(a, kvstore.OnRestore(aLog)))
	awaitSettled(t, []*member{a}, 6, 40*time.Second)
	requireOnePass(t, a, aLog, []int32{0, 1, 2, 3, 4, 5}, zero, end)

	c, cLog := &member{addr: "c:1", dir: t.TempDir()}, &restoreLog{}
	require.NoError(t, e.start(c, kvstore.OnRestore(cLog)))
	ms := []*member{a, c}
	owners := awaitSettled(t, ms, 6, 40*time.Second)
	require.Len(t, ownedBy(c), 3, "c owns its share")
	requireOnePass(t, c, cLog, ownedBy(c), zero, end)

	for k := range deleted {
		p, _, _ := c.s.Owner(k)
		_, ok, err := owners[p].s.Get(ctx, k)
		require.NoError(t, err)
		require.False(t, ok, "deleted key %q is not served", k)
	}
	requireRouted(t, ms, owners, model)
}

// A member restarted on its cache, some of its partitions refused (their
// checkpoints below the log start) and the others fine: the refused ones
// are restored in one pass, into a new file that keeps the others'
// buckets and checkpoints, which then carry on as deltas.
func TestRefusedPartitionsAreRestoredInOnePassKeepingTheOthers(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("DeleteRecords moves the log start offset")
	ctx := ctxT(t)
	w := e.open("", kvstore.Partitions(6))
	model := e.seedKeys(w, "k", 60)
	a := &member{addr: "a:1", dir: t.TempDir()}
	require.NoError(t, e.start(a, kvstore.InstanceID("a")))
	awaitSettled(t, []*member{a}, 6, 40*time.Second)
	require.NoError(t, a.s.Close()) // a static member does not leave: it gets them back

	// While it is away: partitions 0 to 2 get many records and lose those
	// below a's checkpoint, the others a few.
	checkpoint := e.endOffsets()
	for i := 0; ; i++ {
		k := fmt.Sprintf("while-away-%03d", i)
		p, _, _ := w.Owner(k)
		if p >= 3 && i%4 != 0 {
			continue
		}
		model[k] = User{FirstName: k}
		acked(t)(w.Put(ctx, k, model[k]))
		if i >= 160 {
			break
		}
	}
	for k := range model {
		if p, _, _ := w.Owner(k); p < 3 {
			delete(model, k) // the writer's cache still has them: take the topic's word below
		}
	}
	for p := range int32(3) {
		require.NoError(t, e.cluster.Kafka().DeleteRecords(e.topic, p, checkpoint[p]+1))
	}
	left := e.open("") // what the topic holds now, in global mode
	for k, v := range contents(t, left) {
		model[k] = v
	}
	start, end := map[int32]int64{}, e.endOffsets()
	for p := range int32(6) {
		start[p] = checkpoint[p]
		if p < 3 {
			start[p]++
		}
	}

	log := &restoreLog{}
	require.NoError(t, e.start(a, kvstore.InstanceID("a"), kvstore.OnRestore(log)))
	awaitSettled(t, []*member{a}, 6, 40*time.Second)
	starts, _ := log.get()
	require.Len(t, starts, 1, "the refused partitions are restored in one pass, the others not at all")
	require.Equal(t, []int32{0, 1, 2}, rangesOf(starts[0]))
	for _, r := range starts[0].Partitions {
		require.Equal(t, start[r.Partition], r.Start)
		require.Equal(t, end[r.Partition], r.End)
	}
	require.Equal(t, int64(3), a.s.Stats().Guards[kvstore.GuardBelowLogStart])
	require.Equal(t, model, contents(t, a.s), "a serves the restored partitions and the kept ones, caught up")
}

// holdSecondJoins holds, from now until release is closed, every JoinGroup
// of the member advertising addr that comes from a member already in the
// group (its metadata names a generation) once armed is set: a joining
// member's joins pass until it has its first view (a member whose first
// SyncGroup met a rebalance joins again, with a generation), and the round
// after that view waits.
func holdSecondJoins(kc *kfake.Cluster, addr string, armed *atomic.Bool) (held *atomic.Int32, release chan struct{}) {
	held, release = new(atomic.Int32), make(chan struct{})
	kc.ControlKey(kmsg.JoinGroup.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		jr := req.(*kmsg.JoinGroupRequest)
		for _, p := range jr.Protocols {
			var meta kmsg.ConsumerMemberMetadata
			if meta.ReadFrom(p.Metadata) != nil || meta.Generation < 0 || !bytes.Contains(meta.UserData, []byte(addr)) || !armed.Load() {
				continue
			}
			select {
			case <-release:
			default:
				held.Add(1)
				kc.SleepControl(func() { <-release })
			}
			break
		}
		return nil, nil, false
	})
	return held, release
}

// A member joining a running group hears in its first view which
// partitions are moving to it (incoming: standbys, their owners giving them
// up) and restores them then, in one pass, before it owns any of them;
// held there (the next round of the group waits), it has restored them and
// serves none. Once the group makes them its own, it serves them without
// reading them again: its only restore is that pass, of exactly the
// partitions it owns.
func TestAJoiningMemberRestoresItsIncomingPartitionsInOnePassBeforeOwningThem(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("holding the group's second round")
	w := e.open("", kvstore.Partitions(6))
	model := e.seedKeys(w, "k", 240)
	end, zero := e.endOffsets(), map[int32]int64{}

	a := &member{addr: "a:1", dir: t.TempDir()}
	require.NoError(t, e.start(a))
	awaitSettled(t, []*member{a}, 6, 40*time.Second)

	var armed atomic.Bool // c has a view naming partitions: it begins restoring them
	held, release := holdSecondJoins(e.cluster.Kafka(), "c:1", &armed)
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	c, cLog := &member{addr: "c:1", dir: t.TempDir()}, &restoreLog{}
	require.NoError(t, e.start(c, kvstore.OnRestore(cLog), kvstore.OnStateChange(func(ch kvstore.StateChange) {
		if ch.To == kvstore.PartitionRestoring {
			armed.Store(true)
		}
	})))
	require.Eventually(t, func() bool {
		_, ends := cLog.get()
		return held.Load() > 0 && len(ends) == 2 || len(ownedBy(c)) > 0
	}, 40*time.Second, time.Millisecond, "c restores its incoming partitions while the group's next round waits")
	if len(ownedBy(c)) > 0 {
		// c's first SyncGroup met the rebalance a, giving partitions up,
		// began by rejoining: c never saw the first round's map, and the
		// group handed its share over as owned. The scenario needs it.
		t.Skip("c missed the first round's map (a member may miss a generation's map)")
	}
	starts, _ := cLog.get()
	restored := rangesOf(starts[0])
	require.Len(t, restored, 3, "c's share")
	require.Empty(t, ownedBy(c), "c owns nothing yet")
	for _, p := range restored {
		ps := c.s.Stats().Partitions[p]
		require.Equal(t, kvstore.RoleStandby, ps.Role, "partition %d is incoming: kept warm, not served", p)
		require.Equal(t, kvstore.PartitionFollowing, ps.State, "partition %d is restored", p)
		require.Empty(t, ps.Owner, "partition %d has no owner while it moves", p)
	}

	close(release)
	ms := []*member{a, c}
	owners := awaitSettled(t, ms, 6, 40*time.Second)
	require.Equal(t, restored, ownedBy(c), "c owns what it restored")
	requireOnePass(t, c, cLog, restored, zero, end)
	requireRouted(t, ms, owners, model)
}
