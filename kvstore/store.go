package kvstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
	"github.com/compactkv/compactkv/serde"
)

// Store is a map from string keys to values of type V whose source of truth
// is a compacted Kafka topic and whose reads are served from a local bbolt
// cache. All methods are safe for concurrent use.
type Store[V any] struct {
	cfg   config
	topic string
	info  changelog.TopicInfo
	path  string
	log   *slog.Logger
	codec *serde.Codec[V]
	tp    *changelog.Topic
	db    *bolt.DB
	reps  *replicas // one per partition: replica.go
	part  func(key []byte, n int32) int32
	// opened is set once Open's restore is done, before the follower
	// starts: restores and poison checks behave differently in Open.
	opened bool

	statsMu sync.Mutex
	restore RestoreStats
	guards  guardCounts

	// closing is set first thing in Close: from then on every call returns
	// ErrClosed at once, without waiting for any lock.
	closing atomic.Bool
	// wmu orders writes registering in pending (shared) against Close
	// (exclusive), so that Close's wait sees every write it must. No one
	// holds it across a network wait.
	wmu     sync.RWMutex
	pending sync.WaitGroup // writes whose caller has not been answered yet
	// dead ends when Close gives up on the writes still in flight: they
	// fail with ErrClosed. It is also the context of every record handed to
	// the producer, so that one caller giving up fails no other's record.
	dead context.Context
	kill context.CancelFunc

	// mu guards db: held shared while a call reads the file, exclusively to
	// swap in a rebuilt file or to close it. No one holds it across a
	// network wait.
	mu       sync.RWMutex
	closed   bool // db is closed
	stopTail context.CancelFunc
	tailDone chan struct{}

	damaged       atomic.Bool  // a read met a damaged file: the follower rebuilds it
	poisonSkipped atomic.Int64 // poison.go
	mis           misroutes    // partition.go
}

// RestoreStats describes one restore: the one in Open, or a rebuild the
// running store made later. Stats().Restore holds the last one, and
// RestoreListener.OnRestoreEnd is handed each.
type RestoreStats struct {
	// Mode is "full" (the cache was built from the start of the topic) or
	// "delta" (it was brought up to date from its checkpoint).
	Mode string
	// Reason says why a full restore was needed ("no cache", "topic ID
	// changed", ...); empty for a delta restore.
	Reason string
	// Guard is the guard that forced a full restore; GuardNone for delta.
	Guard Guard
	// Records and Bytes count the records (tombstones included) read and the
	// key and value bytes they held.
	Records int64
	Bytes   int64
	// Duration is the restore's wall-clock time.
	Duration time.Duration
	// Partitions is the topic's partition count.
	Partitions int32
}

// Open connects to the brokers and the registry, ensures the topic exists
// and is compacted (creating it if needed), registers the value schema under
// "<topic>-value" after a local compatibility check, restores the local cache
// from the topic, and starts following the topic. When Open returns, every
// record written before it started is visible to Get.
func Open[V any](ctx context.Context, topic string, opts ...Option) (*Store[V], error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if err := cfg.validate(topic); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return nil, fmt.Errorf("kvstore: create cache directory: %w", err)
	}
	s := &Store[V]{
		cfg:   cfg,
		topic: topic,
		path:  filepath.Join(cfg.dir, topic+".db"),
		log:   cfg.logger.With("topic", topic),
		part:  cfg.partitioner.hasher(),
		reps:  newReplicas(0, cfg.stateListener),
	}
	s.dead, s.kill = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			s.closeResources(context.Background())
		}
	}()

	tp, err := changelog.Open(ctx, topic, changelog.Config{
		Brokers: cfg.brokers,
		Spec: changelog.TopicSpec{
			Partitions:        cfg.partitions,
			ReplicationFactor: cfg.replication,
			Configs:           cfg.topicConfigs,
		},
		DeliveryTimeout: cfg.deliveryTimeout,
		ClientOpts:      cfg.kgoOpts,
	})
	if err != nil {
		return nil, fmt.Errorf("kvstore: open %q: %w", topic, err)
	}
	s.tp, s.info = tp, tp.Info()
	s.reps = newReplicas(s.info.Partitions, cfg.stateListener)

	rc, err := sr.NewClient(append([]sr.ClientOpt{sr.URLs(cfg.registryURL)}, cfg.srOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("kvstore: schema registry client: %w", err)
	}
	s.codec, err = serde.New[V](ctx, rc, serde.SubjectFor(topic), cfg.schema, cfg.compat)
	if err != nil {
		return nil, fmt.Errorf("kvstore: open %q: %w", topic, err)
	}

	r, next, err := s.restoreCache(ctx)
	if err != nil {
		return nil, err
	}
	s.opened = true
	tctx, cancel := context.WithCancel(context.Background())
	s.stopTail, s.tailDone = cancel, make(chan struct{})
	var running sync.WaitGroup
	running.Add(2)
	go func() { defer running.Done(); s.follow(tctx, r, next) }()
	go func() { defer running.Done(); s.probeLoop(tctx) }()
	go func() { running.Wait(); close(s.tailDone) }()
	ok = true
	return s, nil
}

// validTopic checks a topic name as Kafka does: 1 to 249 characters of
// [a-zA-Z0-9._-], not "." or "..". The name also names the cache file, so
// this keeps it inside Dir.
func validTopic(t string) error {
	if t == "" || len(t) > 249 || t == "." || t == ".." {
		return fmt.Errorf(`%w: topic name %q: want 1 to 249 characters, and neither "." nor ".."`, ErrBadConfig, t)
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: topic name %q: character %q is not one of [a-zA-Z0-9._-]", ErrBadConfig, t, c)
		}
	}
	return nil
}

// lastRestore returns what the last restore did: the one in Open, or a
// rebuild the store ran later after finding a gap in the topic.
func (s *Store[V]) lastRestore() RestoreStats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.restore
}

// Put writes value under key: it encodes the value (a value that does not fit
// the schema returns ErrInvalidValue and produces nothing), produces it with
// acks=all, waits for the broker's acknowledgement, and then makes it visible
// to Get. It waits at most until ctx ends or DeliveryTimeout (default 2m)
// passes, whichever is first. An error means the store stopped waiting
// before an acknowledgement: the record may still reach the topic, and Get
// shows it once it does (through a late acknowledgement, or the follower).
func (s *Store[V]) Put(ctx context.Context, key string, value V) error {
	return wait(func(done func(error)) { s.PutAsync(ctx, key, value, done) })
}

// Delete writes a tombstone (the key with a null value) and, once the broker
// has acknowledged it, hides the key from Get. Deleting a missing key still
// writes a tombstone. It waits as Put does.
func (s *Store[V]) Delete(ctx context.Context, key string) error {
	return wait(func(done func(error)) { s.DeleteAsync(ctx, key, done) })
}

// wait runs an asynchronous write and returns what it reports.
func wait(start func(done func(error))) error {
	ch := make(chan error, 1)
	start(func(err error) { ch <- err })
	return <-ch
}

// PutAsync is Put without the wait: it encodes the value and hands the
// record to the producer, then returns. done is called exactly once: with
// nil once the broker has acknowledged the record (from then on Get returns
// the value), or with the error that failed it, at the latest when ctx ends
// or DeliveryTimeout passes; an invalid value or a closed store calls done
// before PutAsync returns. done may run on the producer's goroutine and must
// not block. Close waits for every PutAsync in flight, up to CloseTimeout.
// Many writes in flight share batches, which makes PutAsync the fast way to
// load data.
func (s *Store[V]) PutAsync(ctx context.Context, key string, value V, done func(error)) {
	if s.closing.Load() {
		done(ErrClosed)
		return
	}
	if key == "" {
		done(ErrEmptyKey)
		return
	}
	b, err := s.codec.Encode(value)
	if err != nil {
		done(fmt.Errorf("kvstore: put %q: %w", key, err))
		return
	}
	s.writeAsync(ctx, key, b, done)
}

// DeleteAsync is Delete without the wait, as PutAsync is to Put.
func (s *Store[V]) DeleteAsync(ctx context.Context, key string, done func(error)) {
	if key == "" {
		done(ErrEmptyKey)
		return
	}
	s.writeAsync(ctx, key, nil, done)
}

func (s *Store[V]) writeAsync(ctx context.Context, key string, value []byte, done func(error)) {
	s.wmu.RLock()
	if s.closing.Load() {
		s.wmu.RUnlock()
		done(ErrClosed)
		return
	}
	s.pending.Add(1) // Close waits for it after taking wmu, so not before this
	s.wmu.RUnlock()

	op := &writeOp{done: done, key: key, pending: &s.pending}
	op.timer = time.AfterFunc(s.cfg.deliveryTimeout, func() {
		op.finish(fmt.Errorf("%w (%v)", ErrDeliveryTimeout, s.cfg.deliveryTimeout))
	})
	op.stopCtx = context.AfterFunc(ctx, func() { op.finish(ctx.Err()) })
	op.stopDead = context.AfterFunc(s.dead, func() { op.finish(ErrClosed) })
	kb := []byte(key)
	p := s.part(kb, s.info.Partitions)
	s.tp.ProduceAsync(s.dead, p, kb, value, func(off int64, err error) {
		op.timer.Stop() // set before ProduceAsync, which may call back at once
		op.stopCtx()
		op.stopDead()
		switch {
		case err == nil:
			s.reps.all[p].putOwn(key, off, value) // acknowledged: visible, even to a caller that gave up
		case s.dead.Err() != nil:
			err = ErrClosed // Close gave up on it (the producer reports that as its ctx's end)
		}
		op.finish(err)
	})
}

// writeOp is one write in flight: whichever of the acknowledgement, the
// delivery timeout and the caller's ctx comes first reports to done.
type writeOp struct {
	key      string
	done     func(error)
	pending  *sync.WaitGroup
	fired    atomic.Bool
	timer    *time.Timer
	stopCtx  func() bool
	stopDead func() bool
}

func (w *writeOp) finish(err error) {
	if !w.fired.CompareAndSwap(false, true) {
		return
	}
	if err != nil {
		switch {
		case errors.Is(err, changelog.ErrClosed):
			err = ErrClosed
		}
		err = fmt.Errorf("kvstore: write %q: %w", w.key, err)
	}
	w.done(err)
	w.pending.Done()
}

// Get returns the value stored under key and whether it exists. It reads the
// local cache (never the broker) and decodes the value into V, resolving the
// schema it was written with against the store's schema.
func (s *Store[V]) Get(ctx context.Context, key string) (V, bool, error) {
	var zero V
	raw, ok, err := s.lookup(key)
	if err != nil || !ok {
		return zero, false, err
	}
	var v V
	if err := s.codec.Decode(ctx, raw, &v); err != nil {
		return zero, false, fmt.Errorf("kvstore: get %q: %w", key, err)
	}
	return v, true, nil
}

// lookup returns the raw bytes of key: the overlay of own writes first, then
// the partition the partitioner picks, then (for keys another client's
// partitioner placed elsewhere) the other partitions.
func (s *Store[V]) lookup(key string) ([]byte, bool, error) {
	if s.closing.Load() {
		return nil, false, ErrClosed
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, false, ErrClosed
	}
	kb := []byte(key)
	p := s.part(kb, s.info.Partitions)
	if e, ok := s.reps.all[p].getOwn(key); ok {
		return e.value, e.value != nil, nil
	}
	var out []byte
	var found bool
	err := safeView(s.db, func(tx *bolt.Tx) error {
		if out, found = lookupIn(tx, s.reps.all[p].bucket, kb); found {
			return nil
		}
		for q := range s.info.Partitions {
			if q == p {
				continue
			}
			if out, found = lookupIn(tx, s.reps.all[q].bucket, kb); found {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		s.noteDamage(err)
		return nil, false, fmt.Errorf("kvstore: read cache: %w", err)
	}
	return out, found, nil
}

// Entry is one key and its value, as Scan yields them.
type Entry[V any] struct {
	Key   string
	Value V
}

// ScanOption configures Scan.
type ScanOption interface{ applyScan(*scanConfig) }

type scanConfig struct{ after string }

type scanOptFn func(*scanConfig)

func (f scanOptFn) applyScan(c *scanConfig) { f(c) }

// After starts a Scan after key (exclusive), for cursor pagination.
// Default: from the first key with the prefix.
func After(key string) ScanOption { return scanOptFn(func(c *scanConfig) { c.after = key }) }

const scanPage = 256

// Scan yields the entries whose keys start with prefix, in byte order of
// keys. Values are decoded copies; nothing is held across iterations, so the
// loop body may call any method of the store. The scan reads the cache a page
// at a time: writes made during the scan may or may not be seen. An error (a
// value that does not decode, ctx ended, store closed) is yielded once with a
// zero Entry and ends the scan.
func (s *Store[V]) Scan(ctx context.Context, prefix string, opts ...ScanOption) iter.Seq2[Entry[V], error] {
	var sc scanConfig
	for _, o := range opts {
		o.applyScan(&sc)
	}
	return func(yield func(Entry[V], error) bool) {
		after := sc.after
		for {
			if err := ctx.Err(); err != nil {
				yield(Entry[V]{}, err)
				return
			}
			page, next, more, err := s.scanPage(prefix, after)
			if err != nil {
				yield(Entry[V]{}, err)
				return
			}
			for _, kv := range page {
				var v V
				if err := s.codec.Decode(ctx, kv.value, &v); err != nil {
					yield(Entry[V]{}, fmt.Errorf("kvstore: scan %q: %w", kv.key, err))
					return
				}
				if !yield(Entry[V]{Key: kv.key, Value: v}, nil) {
					return
				}
			}
			after = next
			if !more {
				return
			}
		}
	}
}

type rawKV struct {
	key   string
	value []byte
}

// scanPage returns the live entries among the first scanPage keys with prefix
// after after, in key order, merging every partition with the overlay; next
// is the last key it considered (live or hidden by a delete) and more says
// whether keys may follow it.
func (s *Store[V]) scanPage(prefix, after string) (page []rawKV, next string, more bool, err error) {
	if s.closing.Load() {
		return nil, "", false, ErrClosed
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, "", false, ErrClosed
	}
	// The overlay first, then the file: the tail commits to the file before
	// it drops overlay entries, so nothing falls between the two reads.
	own := map[string]ovEntry{}
	for _, r := range s.reps.all {
		r.ownWithPrefix(prefix, after, own)
	}
	merged := map[string][]byte{}
	err = safeView(s.db, func(tx *bolt.Tx) error {
		start := max(prefix, after)
		for p := range s.info.Partitions {
			b := tx.Bucket(s.reps.all[p].bucket)
			if b == nil {
				continue
			}
			c := b.Cursor()
			n := 0
			for k, v := c.Seek([]byte(start)); k != nil && bytes.HasPrefix(k, []byte(prefix)) && n < scanPage; k, v = c.Next() {
				if string(k) <= after {
					continue
				}
				ks := string(k)
				if _, dup := merged[ks]; !dup || s.part(k, s.info.Partitions) == p {
					merged[ks] = bytes.Clone(v)
				}
				n++
			}
		}
		return nil
	})
	if err != nil {
		s.noteDamage(err)
		return nil, "", false, fmt.Errorf("kvstore: read cache: %w", err)
	}
	for k, e := range own {
		merged[k] = e.value // nil hides the key
	}
	keys := slices.Sorted(maps.Keys(merged))
	if len(keys) > scanPage {
		keys, more = keys[:scanPage], true
	} else {
		more = len(keys) == scanPage
	}
	for _, k := range keys {
		if v := merged[k]; v != nil {
			page = append(page, rawKV{k, v})
		}
	}
	if len(keys) > 0 {
		next = keys[len(keys)-1]
	}
	return page, next, more, nil
}

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
	s.wmu.Lock()
	if s.closing.Load() {
		s.wmu.Unlock()
		return nil
	}
	s.closing.Store(true)
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
		s.kill()         // every write still unanswered fails with ErrClosed
		s.pending.Wait() // and its caller has been told
	}
	s.mu.Lock() // waits only for reads of the file
	defer s.mu.Unlock()
	s.closed = true
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("kvstore: close cache: %w", err))
		}
	}
	return errors.Join(errs...)
}

// noteDamage asks the follower to rebuild the cache when err says a read met
// a damaged file.
func (s *Store[V]) noteDamage(err error) {
	if errors.Is(err, errDamaged) {
		s.damaged.Store(true)
	}
}
