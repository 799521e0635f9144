package kvstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// WaitFor returns once this store has applied pos: from then on Get and
// Scan show every write pos covers, and everything written to its
// partitions before them, whichever store or process wrote them. It returns
// at once for a Position this store has applied already, including the
// zero Position. Otherwise it waits for the follower, at most until ctx
// ends (ctx's error): a Position past what the topic holds (forged, say)
// waits until then. A Position of another topic, or of this topic before
// it was recreated, is ErrForeignPosition; a partition that stopped (a
// poison record under PoisonFail, an unwritable cache) returns ErrStopped
// with the cause; after Close, ErrClosed. In partitioned mode a store
// follows the partitions it owns and those it stands by for; a Position
// covering a partition it does not follow fails at once with a
// *NotOwnerError (wait for Position.Only of Stats().Owned, and ask the
// owners about the rest). A standby partition can be waited for, but Get
// does not serve it.
//
// Use it for read-your-writes across instances: hand the Position of a
// write (Put, Delete) to the instance that reads next, and have it WaitFor
// that Position before reading. It costs nothing when the store is caught
// up, and otherwise the time the follower takes to get there (usually a
// fetch round trip).
func (s *Store[V]) WaitFor(ctx context.Context, pos Position) error {
	if s.closing.Load() {
		return ErrClosed
	}
	if err := pos.of(s.info.ID, s.info.Partitions); err != nil {
		return err
	}
	for {
		wake := s.viewChanged() // a new view of the group may take a partition away: check again
		for _, o := range pos.offs {
			if err := s.followsOrOwner(o.p); err != nil {
				return err
			}
		}
		woken := false
		for _, o := range pos.offs {
			err := s.reps.all[o.p].waitReached(ctx, o.next, wake)
			if errors.Is(err, errWoken) {
				woken = true
				break
			}
			if err != nil {
				return fmt.Errorf("kvstore: wait for %q to apply offset %d of partition %d: %w", s.topic, o.next-1, o.p, err)
			}
		}
		if !woken {
			return nil
		}
	}
}

// followsOrOwner says, in partitioned mode, who to ask about partition p
// when this store neither owns it nor stands by for it (in the last view of
// the group): nil if it does (and in global mode).
func (s *Store[V]) followsOrOwner(p int32) error {
	rep := s.reps.all[p]
	rep.mu.RLock()
	defer rep.mu.RUnlock()
	if rep.role != RoleNone {
		return nil
	}
	return &NotOwnerError{Partition: p, Owner: rep.owner}
}

// Sync is a read barrier: it asks the broker for the end offsets of the
// partitions holding keys (every partition when no key is given; in
// partitioned mode, every partition this store follows, and a key of a
// partition it does not follow fails at once with a *NotOwnerError), then
// waits until this store has applied them, as WaitFor does. When it
// returns nil, every write acknowledged to anyone before Sync was called is
// visible to Get and Scan here. It returns the Position it waited for, which
// other stores can WaitFor as well.
//
// The end offsets are the high watermarks, so that a write acknowledged
// after another producer's transaction began is inside the barrier: an open
// transaction therefore holds Sync until it ends (the store reads committed
// records only), bounded by ctx.
//
// Its cost is a ListOffsets request to the partition leaders (with a
// metadata request when the client's is stale; bounded by 5s besides ctx)
// plus the follower's delay, even when nothing is behind; a plain Get costs
// neither. Like a read of a Kafka consumer, it trusts the leader that
// answers: a leader deposed a moment ago that does not know it yet could
// answer with an older end (unlike etcd's ReadIndex, no quorum confirms
// it), which in practice means a barrier behind by the writes of those
// moments. A key written through a partitioner other than this store's is
// searched on every partition by Get, but the barrier covers only the
// partition this store's partitioner picks.
func (s *Store[V]) Sync(ctx context.Context, keys ...string) (Position, error) {
	if s.closing.Load() {
		return Position{}, ErrClosed
	}
	var parts []int32
	for _, k := range keys {
		if k == "" {
			return Position{}, ErrEmptyKey
		}
		if p := s.part([]byte(k), s.info.Partitions); !slices.Contains(parts, p) {
			parts = append(parts, p)
		}
	}
	if len(keys) == 0 {
		for p := range s.info.Partitions {
			if s.followsOrOwner(p) == nil {
				parts = append(parts, p)
			}
		}
	}
	for _, p := range parts {
		if err := s.followsOrOwner(p); err != nil {
			return Position{}, err
		}
	}
	slices.Sort(parts)
	lctx, cancel := context.WithTimeout(ctx, probeTimeout)
	end, err := s.tp.HighWatermarks(lctx)
	cancel()
	if err != nil {
		return Position{}, fmt.Errorf("kvstore: sync %q: list the end offsets: %w", s.topic, err)
	}
	pos := Position{}
	copy(pos.topic[:], s.info.ID[:])
	for _, p := range parts {
		if end[p] > 0 {
			pos.offs = append(pos.offs, partOffset{p: p, next: end[p]})
		}
	}
	if len(pos.offs) == 0 {
		return Position{}, nil
	}
	if err := s.WaitFor(ctx, pos); err != nil {
		return Position{}, err
	}
	return pos, nil
}
