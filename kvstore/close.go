package kvstore

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Close closes the store. From its first moment every call, Get and Scan
// included, returns ErrClosed at once. It then waits, up to CloseTimeout
// (default 5s) in all, for the follower to apply the store's own
// acknowledged writes (so that the next Open has less to read) and for the
// writes in flight to be acknowledged. Writes still unanswered at the bound
// fail with ErrClosed (they may still reach the topic: a later read shows
// them if they did); every write's caller has its answer when Close
// returns. Then it stops following the topic and closes the cache file. It
// never holds a lock a read needs while it waits on the network, and
// returns within about CloseTimeout even with the broker gone: Kafka
// clients still closing their connections then finish in the background.
// The error says what could not be closed cleanly (the cache file); writes
// cut off are reported to their callers, and logged, not returned here. It
// is idempotent: later calls return nil at once.
func (s *Store[V]) Close() error {
	if !s.closing.CompareAndSwap(false, true) {
		return nil
	}
	// A write that saw closing unset registers in pending under wmu shared:
	// once wmu is taken here, every such write is in pending, and every
	// later one sees closing.
	s.wmu.Lock()
	//lint:ignore SA2001 an empty critical section is the barrier meant here
	s.wmu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.closeTimeout)
	defer cancel()
	s.awaitOwnWrites(ctx)
	err := s.closeResources(ctx)
	s.reps.setAll(PartitionStopped, ErrClosed)
	return err
}

// closeDrain bounds how long Close waits for the follower to apply the
// store's own acknowledged writes, within CloseTimeout.
const closeDrain = 2 * time.Second

// awaitOwnWrites waits, up to closeDrain and ctx, until the follower has
// applied every write this store acknowledged. Nothing is lost if it gives
// up: the writes are in the topic and the next restore reads them.
func (s *Store[V]) awaitOwnWrites(ctx context.Context) {
	if !s.opened || s.TailErr() != nil {
		return
	}
	t := time.NewTimer(closeDrain)
	defer t.Stop()
	for _, r := range s.reps.all {
		select {
		case <-r.drained():
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// stopFollowing stops the follower and the probe, waiting for them until
// ctx ends.
func (s *Store[V]) stopFollowing(ctx context.Context) error {
	if s.stopTail == nil {
		return nil
	}
	s.stopTail()
	select {
	case <-s.tailDone:
		s.stopTail = nil
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kvstore: the follower did not stop within CloseTimeout: %w", ctx.Err())
	}
}

// closeResources flushes and closes the producer (the flush bounded by
// ctx), stops the follower (as long as ctx allows), fails the writes still
// unanswered, and closes the cache file.
func (s *Store[V]) closeResources(ctx context.Context) error {
	s.leave(ctx) // partitioned mode: the others take this member's partitions at once
	flushed := make(chan error, 1)
	go func() {
		var err error
		if s.tp != nil {
			err = s.tp.Close(ctx) // the clients' own close goes on in the background past ctx
		}
		flushed <- err
	}()
	var errs []error
	if err := s.stopFollowing(ctx); err != nil {
		errs = append(errs, err)
	}
	select {
	case err := <-flushed:
		if err != nil {
			s.log.Warn("kvstore: Close gave up on writes still in flight", "err", err)
		}
	case <-ctx.Done():
		s.log.Warn("kvstore: Close gave up on writes still in flight: the producer did not flush within CloseTimeout")
	}
	if s.kill != nil {
		s.kill()                        // the producer fails what it still holds
		s.inflight.finishAll(ErrClosed) // every write still unanswered fails with ErrClosed
		s.pending.Wait()                // and its caller has been told
	}
	s.mu.Lock() // waits only for reads of the file
	defer s.mu.Unlock()
	s.closed = true
	s.snaps.drop() // db.Close would wait for it
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("kvstore: close cache: %w", err))
		}
	}
	return errors.Join(errs...)
}
