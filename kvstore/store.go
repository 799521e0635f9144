package kvstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

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
	early  chan openedFile // openEarly's result, until openExisting takes it
	// overlaid is what Open's delta restore read and holds in the
	// replicas' overlays, for the follower to write first (overlay.go).
	overlaid overlaidPolls

	statsMu sync.Mutex
	restore RestoreStats
	guards  guardCounts

	// closing is set first thing in Close: from then on every call returns
	// ErrClosed at once, without waiting for any lock.
	closing atomic.Bool
	// wmu orders writes registering in pending (shared) against Close
	// (exclusive), so that Close's wait sees every write it must. No one
	// holds it across a network wait.
	wmu      sync.RWMutex
	pending  sync.WaitGroup // writes whose caller has not been answered yet
	inflight opSet          // the same writes, for Close to answer
	// dead ends when Close gives up on the writes still in flight: they
	// fail with ErrClosed. It is also the context of every record handed to
	// the producer, so that one caller giving up fails no other's record.
	dead context.Context
	kill context.CancelFunc

	// mu guards db: held shared while a call reads the file, exclusively to
	// swap in a rebuilt file or to close it. No one holds it across a
	// network wait.
	mu       sync.RWMutex
	closed   bool      // db is closed
	snaps    readSnaps // Gets' shared read transaction of db (readsnap.go)
	stopTail context.CancelFunc
	tailDone chan struct{}

	grp *group // partitioned mode (group.go); nil in global mode

	damaged       atomic.Bool  // a read met a damaged file: the follower rebuilds it
	poisonSkipped atomic.Int64 // poison.go
	mis           misroutes    // partition.go
}

// RestoreStats describes one restore: the one in Open, or a rebuild the
// running store made later. Stats().Restore holds the last one, and
// RestoreListener.OnRestoreEnd is handed each. A full restore's Info log
// line ("kvstore: restored") also splits its Duration into reading (fetch,
// screen, sort) and writing (merge, pages, install).
type RestoreStats struct {
	// Mode is "full" (the cache was built from the start of the topic),
	// "delta" (it was brought up to date from its checkpoint), or
	// "partition" (some partitions rebuilt alone, because their checkpoint
	// lay outside their log or their next records were gone; the others
	// brought up to date from their checkpoints, or left as they were). In
	// partitioned mode, Open's own restore is "partition" with nothing
	// read (Reason "partitioned mode: partitions restore as they are
	// assigned"): the partitions restore later, as the group assigns them,
	// each reported to OnRestore as it is.
	Mode string
	// Reason says why a full restore was needed ("no cache", "topic ID
	// changed", ...), or for "partition" why the (first) partition was
	// rebuilt; empty for a delta restore.
	Reason string
	// Guard is the guard that forced a full restore, or for "partition"
	// the one that refused the (first) rebuilt partition; GuardNone for
	// delta.
	Guard Guard
	// Records and Bytes count the records (tombstones included) read and the
	// key and value bytes they held.
	Records int64
	Bytes   int64
	// Duration is the restore's wall-clock time, until its records are
	// served. A delta restore in Open may hold what it read in memory
	// (up to a quarter of RestoreMemory) for the follower to write into
	// the cache file after Open returns; that write is not counted (Close
	// waits for it, up to 2s, as for the store's own writes; should it not
	// be done, the next Open reads the same delta again).
	Duration time.Duration
	// Partitions is the topic's partition count.
	Partitions int32
}

// Open connects to the brokers and the registry, ensures the topic exists
// and is compacted (creating it if needed), registers the value schema under
// "<topic>-value" after a local compatibility check, restores the local cache
// from the topic, and starts following the topic. When Open returns, every
// record written before it started is visible to Get. In partitioned mode
// (Group) it restores nothing up front: it joins the group and returns once
// the partitions of its first view of the group are served; a member
// joining a running group may own nothing in that view and get its share a
// moment later, in the group's second round (Stats says which partitions
// it serves: Stats.Owned).
//
// Options are checked first, all at once (ErrBadConfig), before anything is
// dialled. Open then waits on the network as long as ctx allows; with a ctx
// without deadline, each Kafka request still gives up after franz-go's
// retry timeout (30s unless KafkaOpts sets kgo.RetryTimeout), and the
// restore takes as long as the topic needs. Pass a ctx with a deadline to
// bound the whole of it.
func Open[V any](ctx context.Context, topic string, opts ...Option) (*Store[V], error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil { // a nil Option (an unset variable) sets nothing
			o.apply(&cfg)
		}
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
	go s.expireWrites(s.dead)
	s.openEarly() // the cache file's check, meanwhile
	ok := false
	defer func() {
		if !ok {
			s.dropEarly()
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

	restore := s.restoreCache
	if cfg.group != "" {
		restore = s.openPartitioned
	}
	r, next, err := restore(ctx)
	s.dropEarly() // taken by then; this only guards against a path that did not
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
	if cfg.group != "" {
		if err := s.join(ctx); err != nil {
			return nil, err
		}
		if err := s.awaitOwned(ctx); err != nil {
			return nil, fmt.Errorf("kvstore: open %q: %w", topic, err)
		}
	}
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

// Get returns the value stored under key and whether it exists. It reads the
// local cache (never the broker) and decodes the value into V, resolving the
// schema it was written with against the store's schema. ctx bounds only
// the registry lookup of a writer schema the store has not seen yet; a read
// never waits otherwise. What a plain Get promises about others' writes:
// see the package doc's Consistency section, WaitFor and Sync. The value
// returned is the caller's: it shares no memory with the cache file and
// stays valid after the file is rebuilt or the store closed. A key another
// client's partitioner placed in another partition is found there too
// (global mode). Errors: ErrClosed; in partitioned mode a *NotOwnerError
// (wrapping ErrNotServed) for a key of a partition this member does not
// serve; a decoding error naming the key; a damaged cache file (the store
// then rebuilds it).
func (s *Store[V]) Get(ctx context.Context, key string) (V, bool, error) {
	var zero, v V
	raw, ok, err := s.read(key, &v)
	if err != nil || !ok {
		return zero, false, err
	}
	if raw != nil { // not decoded yet
		if err := s.codec.Decode(ctx, raw, &v); err != nil {
			return zero, false, fmt.Errorf("kvstore: get %q: %w", key, err)
		}
	}
	return v, true, nil
}

// lookup returns the raw bytes of key (a copy, or an own write's bytes,
// which no one changes).
func (s *Store[V]) lookup(key string) ([]byte, bool, error) {
	return s.read(key, nil)
}

// read finds key: in the overlay of own writes first, then in the partition
// the partitioner picks, then (for keys another client's partitioner placed
// elsewhere) in the other partitions. When v is not nil and the value is
// in the file under a writer schema the codec has already resolved, it is
// decoded into *v straight from the file's memory map, and raw is nil;
// otherwise raw holds the value's bytes for the caller to decode, never
// bytes of the memory map. Nothing in it waits on the network.
func (s *Store[V]) read(key string, v *V) (raw []byte, ok bool, err error) {
	if s.closing.Load() {
		return nil, false, ErrClosed
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, false, ErrClosed
	}
	kb := keyBytes(key)
	p := s.part(kb, s.info.Partitions)
	if err := s.served(p, key); err != nil {
		return nil, false, err
	}
	if e, ok := s.reps.all[p].getOwn(key); ok {
		return e.value, e.value != nil, nil
	}
	r := s.fromSnapshot(p, kb, v)
	if !r.used && r.err == nil { // a write is under way: a transaction of its own
		r.err = safeView(s.db, func(tx *bolt.Tx) error {
			if r.raw, r.found = lookupIn(tx, s.reps.all[p].bucket, kb); r.found || s.grp != nil {
				return nil // partitioned mode: this store serves the key's partition only
			}
			for q := range s.info.Partitions {
				if q == p {
					continue
				}
				if r.raw, r.found = lookupIn(tx, s.reps.all[q].bucket, kb); r.found {
					return nil
				}
			}
			return nil
		})
	}
	switch {
	case r.err != nil:
		s.noteDamage(r.err)
		return nil, false, fmt.Errorf("kvstore: read cache: %w", r.err)
	case r.decodeErr != nil:
		return nil, false, fmt.Errorf("kvstore: get %q: %w", key, r.decodeErr)
	}
	return r.raw, r.found, nil
}

// keyBytes returns key's bytes without copying them: for the partitioner
// and bbolt's lookups, which only read them.
func keyBytes(key string) []byte {
	if key == "" {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(key), len(key))
}

// snapRead is what fromSnapshot found.
type snapRead struct {
	used      bool   // a snapshot was read; false: a write is under way
	found     bool   // the key is in the file
	raw       []byte // a copy of its value, when not decoded here
	decodeErr error  // decoding it here failed
	err       error  // the file is damaged (errDamaged)
}

// fromSnapshot looks kb up in the read snapshot (readsnap.go), partition p
// first, and decodes the value into *v (v not nil) while the snapshot
// holds the memory map, when the codec knows its writer schema: hamba/avro
// copies the strings and bytes it decodes, so v never points into the map.
// A panic of bbolt, or a fault reading the map (in bbolt or in the
// decoder), is returned as damage, as safeView does.
func (s *Store[V]) fromSnapshot(p int32, kb []byte, v *V) (r snapRead) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	decoding := false
	var sn *readSnap
	defer func() {
		if x := recover(); x != nil {
			if decoding && !sn.pages.holds(x) {
				// The decoder's own bug, not the file's: raised again, with
				// the stack it had.
				panic(fmt.Sprintf("%v\n%s", x, debug.Stack()))
			}
			r.err = fmt.Errorf("%w: bbolt: %v", errDamaged, x)
		}
	}()
	sn = s.snaps.acquire(s.db, s.reps.all)
	if sn == nil {
		return r
	}
	defer sn.release()
	r.used = true
	val, err := sn.get(p, kb, s.grp != nil)
	if err != nil || val == nil {
		r.err = err
		return r
	}
	r.found = true
	if v != nil {
		decoding = true
		known, err := s.codec.DecodeKnown(val, v)
		decoding = false
		if known {
			r.decodeErr = err
			return r
		}
	}
	r.raw = bytes.Clone(val)
	return r
}

// noteDamage asks the follower to rebuild the cache when err says a read met
// a damaged file.
func (s *Store[V]) noteDamage(err error) {
	if errors.Is(err, errDamaged) {
		s.damaged.Store(true)
	}
}
