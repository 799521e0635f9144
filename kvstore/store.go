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

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/changelog"
	"github.com/compactkv/compactkv/serde"
)

// Store is a map from string keys to values of type V whose source of truth
// is a compacted Kafka topic and whose reads are served from a local bbolt
// cache. All methods are safe for concurrent use.
type Store[V any] struct {
	cfg     config
	topic   string
	info    changelog.TopicInfo
	path    string
	log     *slog.Logger
	codec   *serde.Codec[V]
	w       *changelog.Writer
	adm     *kadm.Client
	db      *bolt.DB
	ov      *overlay
	buckets [][]byte // partition -> bucket name
	part    func(key []byte, n int32) int32

	statsMu sync.Mutex
	restore RestoreStats
	guards  guardCounts

	mu       sync.RWMutex   // held shared by operations, exclusively by Close
	async    sync.WaitGroup // PutAsync and DeleteAsync in flight
	closed   bool
	stopTail context.CancelFunc
	tailDone chan struct{}

	tailMu  sync.Mutex
	tailErr error

	poisonSkipped atomic.Int64 // poison.go
	mis           misroutes    // partition.go
}

// RestoreStats describes the restore Open performed.
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
	if err := validTopic(topic); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
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
	}
	ok := false
	defer func() {
		if !ok {
			s.closeResources(context.Background())
		}
	}()

	codec, _ := cfg.compression.codec()
	w, err := changelog.NewWriter(topic, append([]kgo.Opt{
		kgo.SeedBrokers(cfg.brokers...),
		kgo.ProducerBatchCompression(codec),
	}, cfg.kgoOpts...)...)
	if err != nil {
		return nil, err
	}
	s.w, s.adm = w, w.Admin()

	s.info, err = changelog.EnsureTopic(ctx, s.adm, topic, changelog.TopicSpec{
		Partitions:        cfg.partitions,
		ReplicationFactor: cfg.replication,
		Configs:           cfg.topicConfigs,
	})
	if err != nil {
		return nil, fmt.Errorf("kvstore: open %q: %w", topic, err)
	}
	for p := range s.info.Partitions {
		s.buckets = append(s.buckets, partBucket(p))
	}

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
	tctx, cancel := context.WithCancel(context.Background())
	s.stopTail, s.tailDone = cancel, make(chan struct{})
	go s.tail(tctx, r, next)
	ok = true
	return s, nil
}

func (s *Store[V]) readerOpts() []kgo.Opt {
	return append([]kgo.Opt{kgo.SeedBrokers(s.cfg.brokers...)}, s.cfg.kgoOpts...)
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

// CachePath returns the path of the store's cache file, "<dir>/<topic>.db".
func (s *Store[V]) CachePath() string { return s.path }

// Topic returns the topic's name.
func (s *Store[V]) Topic() string { return s.topic }

// RestoreStats returns what the last restore did: the one in Open, or a
// rebuild the store ran later after finding a gap in the topic.
func (s *Store[V]) RestoreStats() RestoreStats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.restore
}

// Put writes value under key: it encodes the value (a value that does not fit
// the schema returns ErrInvalidValue and produces nothing), produces it with
// acks=all, waits for the broker's acknowledgement, and then makes it visible
// to Get. An error means the write was not acknowledged; it may still have
// reached the topic (a later read will show it), but Get does not show it yet.
func (s *Store[V]) Put(ctx context.Context, key string, value V) error {
	return wait(func(done func(error)) { s.PutAsync(ctx, key, value, done) })
}

// Delete writes a tombstone (the key with a null value) and, once the broker
// has acknowledged it, hides the key from Get. Deleting a missing key still
// writes a tombstone.
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
// record to the producer, then returns. done is called exactly once, with nil
// once the broker has acknowledged the record (from then on Get returns the
// value) or with the error that failed it; an invalid value or a closed store
// calls done before PutAsync returns. done runs on the producer's goroutine
// and must not block. Close waits for every PutAsync in flight. Many writes
// in flight share batches, which makes PutAsync the fast way to load data.
func (s *Store[V]) PutAsync(ctx context.Context, key string, value V, done func(error)) {
	if s.isClosed() {
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
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		done(ErrClosed)
		return
	}
	s.async.Add(1) // Close waits for it after taking s.mu, so not before this
	kb := []byte(key)
	p := s.part(kb, s.info.Partitions)
	s.w.ProduceAsync(ctx, p, kb, value, func(off int64, err error) {
		defer s.async.Done()
		if err != nil {
			if errors.Is(err, kgo.ErrClientClosed) {
				err = ErrClosed
			}
			done(fmt.Errorf("kvstore: write %q: %w", key, err))
			return
		}
		s.ov.put(p, key, off, value)
		done(nil)
	})
}

func (s *Store[V]) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
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
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, false, ErrClosed
	}
	kb := []byte(key)
	p := s.part(kb, s.info.Partitions)
	if e, ok := s.ov.get(p, key); ok {
		return e.value, e.value != nil, nil
	}
	var out []byte
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		if out, found = lookupIn(tx, s.buckets[p], kb); found {
			return nil
		}
		for q := range s.info.Partitions {
			if q == p {
				continue
			}
			if out, found = lookupIn(tx, s.buckets[q], kb); found {
				return nil
			}
		}
		return nil
	})
	if err != nil {
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
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, "", false, ErrClosed
	}
	// The overlay first, then the file: the tail commits to the file before
	// it drops overlay entries, so nothing falls between the two reads.
	own := s.ov.withPrefix(prefix, after)
	merged := map[string][]byte{}
	err = s.db.View(func(tx *bolt.Tx) error {
		start := max(prefix, after)
		for p := range s.info.Partitions {
			b := tx.Bucket(s.buckets[p])
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

// Close stops following the topic, flushes the producer, and closes the
// cache. Calls in flight finish first. It is idempotent; afterwards every
// method returns ErrClosed.
func (s *Store[V]) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.awaitOwnWrites(closeDrain)
	s.stopFollowing() // may need s.mu to swap in a rebuilt cache: not held here

	s.mu.Lock() // waits for calls in flight
	defer s.mu.Unlock()
	s.async.Wait() // and for PutAsync and DeleteAsync in flight
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.closeResources(ctx)
}

// closeDrain bounds how long Close waits for the follower to apply the
// store's own acknowledged writes, so that the next Open has less to read.
const closeDrain = 2 * time.Second

// awaitOwnWrites waits, up to d, until the follower has applied every write
// this store acknowledged. Nothing is lost if it gives up: the writes are in
// the topic and the next restore reads them.
func (s *Store[V]) awaitOwnWrites(d time.Duration) {
	if s.ov == nil || s.TailErr() != nil {
		return
	}
	deadline := time.Now().Add(d)
	for s.ov.n.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

func (s *Store[V]) stopFollowing() {
	if s.stopTail != nil {
		s.stopTail()
		<-s.tailDone
		s.stopTail = nil
	}
}

func (s *Store[V]) closeResources(ctx context.Context) error {
	s.stopFollowing()
	var errs []error
	if s.w != nil {
		if err := s.w.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("kvstore: flush producer: %w", err))
		}
	}
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("kvstore: close cache: %w", err))
		}
	}
	return errors.Join(errs...)
}
