package kvstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/compactkv/compactkv/changelog"
)

// Put writes value under key: it encodes the value (a value that does not fit
// the schema returns ErrInvalidValue and produces nothing), produces it with
// acks=all, waits for the broker's acknowledgement, and then makes it visible
// to Get. It returns the write's Position: another store that has applied
// it (WaitFor) shows the write too. It waits at most until ctx ends or
// DeliveryTimeout (default 2m) passes, whichever is first. An error means
// the store stopped waiting before an acknowledgement: the record may still
// reach the topic, and Get shows it once it does (through a late
// acknowledgement, or the follower).
func (s *Store[V]) Put(ctx context.Context, key string, value V) (Position, error) {
	return wait(func(done func(Position, error)) { s.PutAsync(ctx, key, value, done) })
}

// Delete writes a tombstone (the key with a null value) and, once the broker
// has acknowledged it, hides the key from Get, and returns the tombstone's
// Position. Deleting a missing key still writes a tombstone. It waits as
// Put does. The tombstone goes to the
// partition this store's partitioner picks: if another writer's partitioner
// put the key elsewhere (Stats().Misrouted counts such keys), that version
// lives on and Get still finds it.
func (s *Store[V]) Delete(ctx context.Context, key string) (Position, error) {
	return wait(func(done func(Position, error)) { s.DeleteAsync(ctx, key, done) })
}

// wait runs an asynchronous write and returns what it reports.
func wait(start func(done func(Position, error))) (Position, error) {
	type result struct {
		pos Position
		err error
	}
	ch := make(chan result, 1)
	start(func(pos Position, err error) { ch <- result{pos, err} })
	r := <-ch
	return r.pos, r.err
}

// PutAsync is Put without the wait: it encodes the value and hands the
// record to the producer, then returns. done is called exactly once: with
// the write's Position once the broker has acknowledged the record (from
// then on Get returns the value), or with the error that failed it, at the
// latest when ctx ends or DeliveryTimeout passes; an invalid value, a
// closed store or a ctx that has already ended calls done before PutAsync
// returns, and nothing is produced. done may run on the producer's goroutine and must
// not block. Close waits for every PutAsync in flight, up to CloseTimeout.
// Many writes in flight share batches, which makes PutAsync the fast way to
// load data.
func (s *Store[V]) PutAsync(ctx context.Context, key string, value V, done func(Position, error)) {
	if err := s.writable(key); err != nil {
		done(Position{}, err)
		return
	}
	b, err := s.codec.Encode(value)
	if err != nil {
		done(Position{}, fmt.Errorf("kvstore: put %q: %w", key, err))
		return
	}
	s.writeAsync(ctx, key, b, done)
}

// DeleteAsync is Delete without the wait, as PutAsync is to Put.
func (s *Store[V]) DeleteAsync(ctx context.Context, key string, done func(Position, error)) {
	if err := s.writable(key); err != nil {
		done(Position{}, err)
		return
	}
	s.writeAsync(ctx, key, nil, done)
}

// writable says why a write of key cannot start, if it cannot: a closed
// store, an empty key.
func (s *Store[V]) writable(key string) error {
	switch {
	case s.closing.Load():
		return ErrClosed
	case key == "":
		return ErrEmptyKey
	}
	return nil
}

func (s *Store[V]) writeAsync(ctx context.Context, key string, value []byte, done func(Position, error)) {
	if err := ctx.Err(); err != nil { // an ended ctx sends nothing
		done(Position{}, fmt.Errorf("kvstore: write %q: %w", key, err))
		return
	}
	s.wmu.RLock()
	if s.closing.Load() {
		s.wmu.RUnlock()
		done(Position{}, ErrClosed)
		return
	}
	s.pending.Add(1) // Close waits for it after taking wmu, so not before this
	s.wmu.RUnlock()

	op := &writeOp{done: done, key: key, pending: &s.pending, set: &s.inflight,
		deadline: time.Now().Add(s.cfg.deliveryTimeout)}
	s.inflight.add(op) // expireWrites answers it at its deadline, Close at the latest
	op.stopCtx = context.AfterFunc(ctx, func() { op.finish(Position{}, ctx.Err()) })
	kb := []byte(key)
	p := s.part(kb, s.info.Partitions)
	s.tp.ProduceAsync(s.dead, p, kb, value, func(off int64, err error) {
		op.stopCtx() // set before ProduceAsync, which may call back at once
		var pos Position
		switch {
		case err == nil:
			s.reps.all[p].putOwn(key, off, value) // acknowledged: visible, even to a caller that gave up (if followed here)
			pos = positionAt(s.info.ID, p, off)
		case s.dead.Err() != nil:
			err = ErrClosed // Close gave up on it (the producer reports that as its ctx's end)
		}
		op.finish(pos, err)
	})
}

// writeOp is one write in flight: whichever of the acknowledgement, the
// delivery timeout and the caller's ctx comes first reports to done.
type writeOp struct {
	key      string
	done     func(Position, error)
	pending  *sync.WaitGroup
	set      *opSet
	shard    uint32
	fired    atomic.Bool
	deadline time.Time // DeliveryTimeout after the write began
	stopCtx  func() bool
}

func (w *writeOp) finish(pos Position, err error) {
	if !w.fired.CompareAndSwap(false, true) {
		return
	}
	w.set.remove(w)
	if err != nil {
		switch {
		case errors.Is(err, changelog.ErrClosed):
			err = ErrClosed
		}
		err = fmt.Errorf("kvstore: write %q: %w", w.key, err)
	}
	w.done(pos, err)
	w.pending.Done()
}

// opSet holds the writes whose callers have no answer yet, so that Close
// can answer them. It is sharded so that concurrent writes rarely meet on
// one lock.
type opSet struct {
	next   atomic.Uint32
	shards [16]opShard
}

type opShard struct {
	mu sync.Mutex
	m  map[*writeOp]struct{}
	_  [40]byte // one cache line each
}

func (s *opSet) add(op *writeOp) {
	op.shard = s.next.Add(1) % uint32(len(s.shards))
	sh := &s.shards[op.shard]
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[*writeOp]struct{})
	}
	sh.m[op] = struct{}{}
	sh.mu.Unlock()
}

func (s *opSet) remove(op *writeOp) {
	sh := &s.shards[op.shard]
	sh.mu.Lock()
	delete(sh.m, op)
	sh.mu.Unlock()
}

// finishAll answers every write still in the set with err.
func (s *opSet) finishAll(err error) { s.finishIf(func(*writeOp) bool { return true }, err) }

// finishIf answers with err every write in the set that due picks.
func (s *opSet) finishIf(due func(*writeOp) bool, err error) {
	for i := range s.shards {
		sh := &s.shards[i]
		var ops []*writeOp
		sh.mu.Lock()
		for op := range sh.m {
			if due(op) {
				ops = append(ops, op)
			}
		}
		sh.mu.Unlock()
		for _, op := range ops {
			op.finish(Position{}, err)
		}
	}
}

// expireEvery is how often expireWrites looks for writes past their
// deadline: the resolution of DeliveryTimeout.
const expireEvery = 100 * time.Millisecond

// expireWrites answers every write still unanswered at its deadline with
// ErrDeliveryTimeout, until ctx ends. One goroutine for all writes, instead
// of a timer each.
func (s *Store[V]) expireWrites(ctx context.Context) {
	t := time.NewTicker(expireEvery)
	defer t.Stop()
	err := fmt.Errorf("%w (%v)", ErrDeliveryTimeout, s.cfg.deliveryTimeout)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.inflight.finishIf(func(op *writeOp) bool { return !now.Before(op.deadline) }, err)
		}
	}
}
