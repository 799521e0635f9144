package kvstore

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/compactkv/compactkv/changelog"
	bolt "go.etcd.io/bbolt"
)

// Partitioned mode (Group): the store joins a consumer group on its topic
// and restores, follows and serves only the partitions the group assigns it
// (its owned partitions), keeps its standby partitions warm (followed, not
// served), and leaves the rest alone, their buckets and checkpoints kept
// for the day they come back. Among the standbys, the incoming partitions
// (on their way to this member in a cooperative rebalance, their owners
// giving them up) are restored as owned ones are, so that the member serves
// them as soon as the group makes them its own.

// group is the store's membership in partitioned mode.
type group struct {
	m *changelog.Membership

	mu      sync.Mutex
	view    changelog.Assignment // the last view, as OnAssign gave it
	views   int64
	pending *changelog.Assignment // a view the follower has not applied yet
	changed chan struct{}         // closed and replaced at every view: WaitFor checks its partitions again
	kick    context.CancelFunc    // ends the follower's current poll, so it applies a view at once
}

// openPartitioned opens the cache file for partitioned mode and returns an
// empty reader: which partitions to restore is the group's to say (join,
// then applyView). A file the guards refuse as a whole (another format,
// topic or partition count) is replaced by an empty one; partitions are
// judged one by one as they are assigned.
func (s *Store[V]) openPartitioned(ctx context.Context) (*changelog.Reader, map[int32]int64, error) {
	s.grp = &group{}
	for p := range s.info.Partitions {
		s.reps.update(p, func(r *replica) {
			r.role, r.followed, r.warm, r.state = RoleNone, false, false, PartitionIdle
		})
	}
	s.removeLeftovers()
	lo, err := s.listOffsets(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("kvstore: open %q: %w", s.topic, err)
	}
	guard, reason, _, _, err := s.openExisting(lo.start, lo.end)
	if err != nil {
		return nil, nil, err
	}
	if s.db == nil { // none, or refused as a whole: start an empty one
		if guard != GuardNoCache {
			s.guards[guard].Add(1)
			s.log.Warn("kvstore: cache cannot be trusted, starting an empty one", "guard", guard.String(), "reason", reason)
		}
		db, err := openBolt(s.path, s.cfg.lockTimeout, false)
		if err != nil {
			return nil, nil, fmt.Errorf("kvstore: create cache file %s: %w", s.path, err)
		}
		s.db = db
		err = safeUpdate(db, func(tx *bolt.Tx) error {
			return writeMeta(tx, s.topic, s.info.ID, s.info.Partitions, zeroOffsets(s.info.Partitions), time.Time{})
		})
		if err != nil {
			return nil, nil, fmt.Errorf("kvstore: create cache file %s: %w", s.path, err)
		}
	}
	s.publishRestore(RestoreStats{Mode: "partition", Reason: "partitioned mode: partitions restore as they are assigned",
		Guard: guard, Partitions: s.info.Partitions})
	r, err := s.tp.NewReader(map[int32]int64{})
	if err != nil {
		return nil, nil, err
	}
	return r, map[int32]int64{}, nil
}

// resetPartitioned replaces the cache file with an empty one, in
// partitioned mode, where the file cannot be trusted as a whole (damage):
// the follower then takes on again the partitions the roles say, each
// rebuilt from the topic in the background, instead of reading the whole
// topic as global mode's full restore does. It returns an empty reader.
func (s *Store[V]) resetPartitioned(ctx context.Context, guard Guard, reason string) (*changelog.Reader, map[int32]int64, error) {
	s.guards[guard].Add(1)
	s.log.Warn("kvstore: cache cannot be trusted, starting an empty one; the partitions this member keeps are rebuilt one by one",
		"guard", guard.String(), "reason", reason)
	tmp := s.path + ".restore"
	_ = os.Remove(tmp)
	db, err := openBolt(tmp, s.cfg.lockTimeout, false)
	if err == nil {
		err = safeUpdate(db, func(tx *bolt.Tx) error {
			return writeMeta(tx, s.topic, s.info.ID, s.info.Partitions, zeroOffsets(s.info.Partitions), time.Time{})
		})
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = replaceFile(tmp, s.path)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, nil, fmt.Errorf("kvstore: start an empty cache file: %w", err)
	}
	for p := range s.info.Partitions {
		rep := s.reps.all[p]
		rep.handover.Lock()
		s.reps.unfollow(p)
		rep.handover.Unlock()
	}
	if err := s.installCache(zeroOffsets(s.info.Partitions)); err != nil {
		return nil, nil, err
	}
	r, err := s.tp.NewReader(map[int32]int64{})
	if err != nil {
		return nil, nil, err
	}
	return r, map[int32]int64{}, nil
}

// zeroOffsets returns offset 0 for each of partitions partitions.
func zeroOffsets(partitions int32) map[int32]int64 {
	m := make(map[int32]int64, partitions)
	for p := range partitions {
		m[p] = 0
	}
	return m
}

// join joins the group; the first view has been applied to the replicas'
// roles when it returns.
func (s *Store[V]) join(ctx context.Context) error {
	m, err := changelog.JoinGroup(ctx, changelog.GroupConfig{
		Brokers:        s.cfg.brokers,
		ClientOpts:     s.cfg.kgoOpts,
		Group:          s.cfg.group,
		Topic:          s.topic,
		Advertise:      s.cfg.advertise,
		Standbys:       s.cfg.standbys,
		SessionTimeout: s.cfg.sessionTimeout,
		InstanceID:     s.cfg.instanceID,
		OnAssign:       s.onAssign,
	})
	if err != nil {
		return fmt.Errorf("kvstore: join group %q: %w", s.cfg.group, err)
	}
	s.grp.mu.Lock()
	s.grp.m = m
	s.grp.mu.Unlock()
	return nil
}

// onAssign takes a new view of the group. Roles change here, before it
// returns: a partition taken away is not served from this moment (the group
// hands it to another member only after this returns). Restores are the
// follower's: it is kicked to apply the view at once.
func (s *Store[V]) onAssign(v changelog.Assignment) {
	role := make([]PartitionRole, s.info.Partitions)
	incoming := make([]bool, s.info.Partitions)
	for p := range role {
		role[p] = RoleNone
	}
	for _, p := range v.Incoming {
		if p >= 0 && p < s.info.Partitions {
			incoming[p] = true
		}
	}
	for _, p := range v.Standby {
		if p >= 0 && p < s.info.Partitions {
			role[p] = RoleStandby
		}
	}
	for _, p := range v.Owned {
		if p >= 0 && p < s.info.Partitions {
			role[p] = RoleOwner
		}
	}
	for p, r := range role {
		s.reps.update(int32(p), func(rep *replica) {
			if r == RoleOwner && rep.role != RoleOwner && rep.followed {
				// A standby (or a partition given up and given back
				// before the follower, busy with a restore, let go of it:
				// another member may have served it meanwhile) may lag:
				// served once it has caught up with the
				// end the follower lists when it applies this view, and
				// restoring until then (as a delta is), not following: its
				// keys are not served yet.
				rep.warm, rep.promoted = false, true
				if rep.state == PartitionFollowing {
					rep.state = PartitionRestoring
				}
			}
			rep.role, rep.owner, rep.incoming = r, v.Owners[int32(p)], incoming[p] && r == RoleStandby
		})
	}
	g := s.grp
	g.mu.Lock()
	g.view, g.pending = v, &v
	g.views++
	if g.changed != nil {
		close(g.changed)
	}
	g.changed = make(chan struct{})
	kick := g.kick
	g.mu.Unlock()
	if kick != nil {
		kick()
	}
	s.log.Info("kvstore: group view", "group", s.cfg.group, "generation", v.Generation,
		"owned", v.Owned, "standby", v.Standby, "incoming", v.Incoming, "lost", v.Lost)
}

// pollContext returns the context of the follower's next poll: in
// partitioned mode a new view of the group ends it early.
func (s *Store[V]) pollContext(ctx context.Context) (context.Context, context.CancelFunc) {
	pctx, cancel := context.WithTimeout(ctx, probeEvery)
	if s.grp == nil {
		return pctx, cancel
	}
	s.grp.mu.Lock()
	defer s.grp.mu.Unlock()
	if s.grp.pending != nil {
		cancel()
		return pctx, cancel
	}
	s.grp.kick = cancel
	return pctx, cancel
}

// viewChanged returns a channel closed at the next view of the group; nil
// (never) in global mode.
func (s *Store[V]) viewChanged() <-chan struct{} {
	if s.grp == nil {
		return nil
	}
	s.grp.mu.Lock()
	defer s.grp.mu.Unlock()
	if s.grp.changed == nil {
		s.grp.changed = make(chan struct{})
	}
	return s.grp.changed
}

// takeView returns the view the follower has yet to apply, if any.
func (s *Store[V]) takeView() (changelog.Assignment, bool) {
	if s.grp == nil {
		return changelog.Assignment{}, false
	}
	s.grp.mu.Lock()
	defer s.grp.mu.Unlock()
	if s.grp.pending == nil {
		return changelog.Assignment{}, false
	}
	v := *s.grp.pending
	s.grp.pending = nil
	return v, true
}

// applyView makes the follower read the partitions this member owns or
// stands by for, and no other: a partition taken away leaves the reader
// (its bucket and checkpoint stay); one given is brought up to date, from
// its checkpoint through the reader when the cache can be trusted (a
// delta), otherwise rebuilt from the start of the topic. Either way it is
// served (owned) once it has caught up with the end offset listed here.
//
// The rebuilds are refills in the background, one partition at a time,
// unless restoreSplit picks one pass (a member starting with an empty or
// refused cache, or after damage): then the owned and incoming ones are
// returned as together, for the caller to restore in one pass
// (restoreGained), and the other standbys as after, refilled once that pass
// is done.
func (s *Store[V]) applyView(ctx context.Context, r *changelog.Reader, pos map[int32]int64, rf *refills) (together, after []partGuard) {
	var gained, promoted []int32
	for p, rep := range s.reps.all {
		p := int32(p)
		rep.mu.RLock()
		want, followed, prom := rep.role != RoleNone, rep.followed, rep.promoted
		rep.mu.RUnlock()
		switch {
		case followed && !want:
			rep.handover.Lock()
			r.Remove(p)
			delete(pos, p)
			s.reps.unfollow(p)
			rep.handover.Unlock()
		case want && !followed:
			gained = append(gained, p)
		case prom:
			promoted = append(promoted, p)
		}
	}
	if len(gained) == 0 && len(promoted) == 0 {
		return nil, nil
	}
	// Held until each gained partition is read or queued for a rebuild, so
	// that a rebuild of an earlier turn cannot swap its bucket in between.
	for _, p := range gained {
		rep := s.reps.all[p]
		rep.handover.Lock()
		defer rep.handover.Unlock()
		s.reps.update(p, func(rep *replica) { rep.gen++; rep.followed, rep.state, rep.err = true, PartitionRestoring, nil })
	}
	lctx, cancel := context.WithTimeout(ctx, probeTimeout)
	lo, err := s.listOffsets(lctx)
	cancel()
	for _, p := range promoted { // served once caught up with what the topic holds now
		s.reps.update(p, func(rep *replica) {
			end := rep.end // the last probe's, should the listing have failed
			if err == nil {
				end = max(end, lo.end[p])
			}
			rep.promoted = false
			if rep.reached() >= end {
				rep.warm = true
				if rep.state == PartitionRestoring { // restored while it was promoted
					rep.state = PartitionFollowing
				}
			} else {
				rep.target = end
			}
		})
	}
	var m cacheMeta
	if err == nil {
		m, err = readMeta(s.db)
	}
	var refused []partGuard
	for _, p := range gained {
		if err != nil { // nothing to judge the checkpoint by: rebuild it
			refused = append(refused, partGuard{p, GuardCorrupt, "cannot check the partition's checkpoint: " + err.Error()})
			continue
		}
		if bad := partitionVerdict(m, p, s.info, lo.start, lo.end, time.Now()); bad != nil {
			refused = append(refused, *bad)
			continue
		}
		next := m.next[p]
		pos[p] = next
		r.Add(map[int32]int64{p: next})
		s.reps.update(p, func(rep *replica) { rep.beginDelta(next, lo.end[p], m.current[p], lo.at) })
		s.log.Info("kvstore: partition assigned, restoring its delta", "partition", p, "from", next, "to", lo.end[p])
	}
	if err == nil {
		together, after = s.restoreSplit(refused, rf)
	}
	if len(together) == 0 {
		for _, g := range refused {
			rf.start(g.p, g.guard, g.reason)
		}
	}
	return together, after
}

// restoreSplit says which of the refused partitions just taken on to
// restore together (restoreTogether), and which to refill once that is
// done: none unless one of them is owned or incoming, no refill runs
// (refills write the cache file from goroutines of their own) and the
// member follows no other partition caught up (the pass runs on the
// follower's goroutine, so a partition served meanwhile would be read no
// further, nor a standby promoted meanwhile served, until it ends;
// partitions beginning a delta in the same view wait for it, served no
// sooner than they would be). The owned and incoming ones are restored
// together, and the other standbys refilled after.
//
// A member joining a group, or restarting on a cache whose partitions are
// refused, so gets its share in one pass: its first view names the
// partitions moving to it as incoming (protocol v2), and the pass begins
// while their owners give them up; when the second round makes them owned,
// they are served as soon as the pass has caught them up (promoted, as a
// standby made owner is). With no incoming partitions named (a group
// speaking protocol v1, in a rolling deploy), its share comes owned, in one
// view or in two (the members giving partitions up do so in turn), and the
// second view's partitions are refilled. A member long in the group given a
// partition (a failover) refills it.
func (s *Store[V]) restoreSplit(refused []partGuard, rf *refills) (together, after []partGuard) {
	if len(refused) == 0 || !rf.idle() {
		return nil, nil
	}
	in := make(map[int32]bool, len(refused))
	for _, g := range refused {
		in[g.p] = true
	}
	for p := range s.info.Partitions {
		if !in[p] && s.reps.caughtUp(p) {
			// The pass runs on the follower's goroutine: a partition
			// caught up meanwhile would be read no further (its reads
			// frozen, a standby promoted meanwhile not served) until it
			// ends.
			return nil, nil
		}
	}
	for _, g := range refused {
		if rf.ahead(g.p) {
			together = append(together, g)
		} else {
			after = append(after, g)
		}
	}
	if len(together) == 0 {
		// Standbys only: refilled one by one, so that owned partitions
		// given meanwhile take their turn first.
		return nil, nil
	}
	return together, after
}

// restoreGained restores the partitions applyView returned as together in
// one pass, then starts the refills of those it returned as after. Should
// the pass fail (a broker gone, a poison record), the partitions are
// refilled one by one instead, which retry, or stop the follower, as they
// do.
func (s *Store[V]) restoreGained(ctx context.Context, r *changelog.Reader, pos map[int32]int64, rf *refills, together, after []partGuard) {
	if len(together) > 0 {
		began := time.Now()
		next, err := s.restoreTogether(ctx, together)
		if ctx.Err() != nil {
			return
		}
		if err == nil && time.Since(began) >= rf.bound() {
			// As for a refill that long: rebuilding them again could not
			// do better, and would start over for ever.
			rf.markSlow(together)
		}
		if err != nil {
			s.log.Warn("kvstore: restoring partitions together failed, rebuilding them one by one", "err", err)
			after = append(together, after...)
		}
		for p, n := range next {
			pos[p] = n
			r.Add(map[int32]int64{p: n})
		}
	}
	for _, g := range after {
		if s.reps.followed(g.p) {
			rf.start(g.p, g.guard, g.reason)
		}
	}
}

// served says why the store does not serve partition p, if it does not:
// nil in global mode and for an owned partition that has caught up.
func (s *Store[V]) served(p int32, key string) error {
	if s.grp == nil {
		return nil
	}
	rep := s.reps.all[p]
	rep.mu.RLock()
	role, warm, owner := rep.role, rep.warm, rep.owner
	rep.mu.RUnlock()
	switch {
	case role != RoleOwner:
		return &NotOwnerError{Key: key, Partition: p, Owner: owner}
	case !warm:
		return fmt.Errorf("%w: key %q: partition %d is still restoring here", ErrNotServed, key, p)
	}
	return nil
}

// Owner says which partition key belongs to and the advertised address of
// the member that owns it: "" while no member does (a rebalance moves it).
// local says this store serves the key now (always, in global mode, where
// addr is ""); a partition this store owns but is still restoring has its
// own address with local false (reads of it fail with ErrNotServed until
// it is served). After Close, the owners are those of the last view.
func (s *Store[V]) Owner(key string) (partition int32, addr string, local bool) {
	p := s.part([]byte(key), s.info.Partitions)
	if s.grp == nil {
		return p, "", true
	}
	rep := s.reps.all[p]
	rep.mu.RLock()
	defer rep.mu.RUnlock()
	return p, rep.owner, rep.role == RoleOwner && rep.warm
}

// groupStats returns partitioned mode's part of Stats; nil in global mode.
func (s *Store[V]) groupStats() *GroupStats {
	if s.grp == nil {
		return nil
	}
	s.grp.mu.Lock()
	defer s.grp.mu.Unlock()
	return &GroupStats{Group: s.cfg.group, Advertise: s.cfg.advertise,
		Generation: s.grp.view.Generation, Views: s.grp.views, Lost: s.grp.view.Lost}
}

// leave leaves the group (bounded by ctx), so that the others take this
// member's partitions at once rather than after the session timeout.
func (s *Store[V]) leave(ctx context.Context) {
	if s.grp == nil {
		return
	}
	s.grp.mu.Lock()
	m := s.grp.m
	s.grp.mu.Unlock()
	if m == nil {
		return
	}
	if err := m.Close(ctx); err != nil {
		s.log.Warn("kvstore: leaving the group", "group", s.cfg.group, "err", err)
	}
}

// awaitOwned waits until every partition this member owns is served, or
// ctx ends.
func (s *Store[V]) awaitOwned(ctx context.Context) error {
	for {
		var wait <-chan struct{}
		for _, rep := range s.reps.all {
			rep.mu.Lock()
			if rep.role == RoleOwner && !rep.warm && rep.state != PartitionStopped {
				if rep.moved == nil {
					rep.moved = make(chan struct{})
				}
				wait = rep.moved
			}
			rep.mu.Unlock()
			if wait != nil {
				break
			}
		}
		if wait == nil {
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("kvstore: restore the partitions this member owns: %w", ctx.Err())
		}
	}
}
