package changelog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config says how to reach the cluster and how to create the topic if it is
// missing.
type Config struct {
	// Brokers are the bootstrap servers, "host:port". Required.
	Brokers []string
	// Spec is how Open creates a missing topic. No default: the zero
	// TopicSpec asks for 0 partitions, which the broker refuses; use -1
	// for the broker's defaults.
	Spec TopicSpec
	// DeliveryTimeout bounds how long the producer keeps trying a record
	// (retries included) before it fails it with ErrDeliveryTimeout.
	// 0: no bound of the Topic's own.
	DeliveryTimeout time.Duration
	// ClientOpts are franz-go options (TLS, SASL, compression, timeouts)
	// applied after the package's own, to the producer, the admin requests
	// and every Reader, except those the guarantees rest on: acks=all,
	// explicit partitions, read_committed, never skipping missing offsets.
	ClientOpts []kgo.Opt
}

// Topic is one compacted topic: its identity and offsets, a producer that
// waits for acks=all, and Readers of its partitions. It is safe for
// concurrent use.
type Topic struct {
	name string
	cfg  Config
	cl   *kgo.Client // producer and admin requests
	adm  *kadm.Client
	info TopicInfo

	closeOnce sync.Once
	closed    atomic.Bool
}

// Open connects to the cluster, creates the topic with cleanup.policy=compact
// if it does not exist (as cfg.Spec says) and describes it. An existing topic
// that is not compacted is refused with ErrNotCompacted. The producer uses
// acks=all, the idempotent producer, no linger (a single record is sent at
// once; records produced while a request is in flight are batched) and
// explicit partitions.
func Open(ctx context.Context, name string, cfg Config) (*Topic, error) {
	if len(cfg.Brokers) == 0 {
		return nil, fmt.Errorf("changelog: open topic %q: no brokers", name)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	}
	if cfg.DeliveryTimeout > 0 {
		opts = append(opts, kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout))
	}
	opts = append(append(opts, cfg.ClientOpts...),
		kgo.DefaultProduceTopic(name),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("changelog: new producer for topic %q: %w", name, err)
	}
	t := &Topic{name: name, cfg: cfg, cl: cl, adm: kadm.NewClient(cl)}
	if t.info, err = ensureTopic(ctx, t.adm, name, cfg.Spec); err != nil {
		cl.Close()
		return nil, err
	}
	return t, nil
}

// Name returns the topic's name.
func (t *Topic) Name() string { return t.name }

// Info returns the topic's identity and settings as Open found them.
func (t *Topic) Info() TopicInfo { return t.info }

// Offsets returns, per partition, the log start offset and the end offset a
// read_committed reader reaches (the last stable offset).
func (t *Topic) Offsets(ctx context.Context) (start, end map[int32]int64, err error) {
	so, err := t.adm.ListStartOffsets(ctx, t.name)
	if err == nil {
		err = so.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("changelog: list start offsets of topic %q: %w", t.name, translate(err))
	}
	if end, err = t.EndOffsets(ctx); err != nil {
		return nil, nil, err
	}
	start = make(map[int32]int64)
	so.Each(func(o kadm.ListedOffset) { start[o.Partition] = o.Offset })
	return start, end, nil
}

// EndOffsets returns, per partition, the end offset a read_committed reader
// reaches (the last stable offset): one request, where Offsets makes two.
func (t *Topic) EndOffsets(ctx context.Context) (map[int32]int64, error) {
	eo, err := t.adm.ListCommittedOffsets(ctx, t.name)
	if err == nil {
		err = eo.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("changelog: list end offsets of topic %q: %w", t.name, translate(err))
	}
	end := make(map[int32]int64)
	eo.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
	return end, nil
}

// HighWatermarks returns, per partition, the offset after the last record
// the broker has acknowledged (the high watermark), transactional or not.
// Unlike EndOffsets it counts records of transactions still open, which a
// read_committed reader sees (with their marker) only once they end: a read
// barrier must use it, or a record acknowledged after a transaction began
// would fall outside the barrier.
func (t *Topic) HighWatermarks(ctx context.Context) (map[int32]int64, error) {
	eo, err := t.adm.ListEndOffsets(ctx, t.name)
	if err == nil {
		err = eo.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("changelog: list high watermarks of topic %q: %w", t.name, translate(err))
	}
	hw := make(map[int32]int64)
	eo.Each(func(o kadm.ListedOffset) { hw[o.Partition] = o.Offset })
	return hw, nil
}

// Produce writes key and value to partition and returns the record's offset
// once the broker has acknowledged it. A nil value is a tombstone. On error
// the record may or may not have been written; it was not acknowledged.
func (t *Topic) Produce(ctx context.Context, partition int32, key, value []byte) (int64, error) {
	type result struct {
		off int64
		err error
	}
	ch := make(chan result, 1)
	t.ProduceAsync(ctx, partition, key, value, func(off int64, err error) { ch <- result{off, err} })
	r := <-ch
	return r.off, r.err
}

// ProduceAsync writes key and value to partition without waiting and calls
// done exactly once with the record's offset once the broker has
// acknowledged it, or with the error that failed it: a *PartitionError
// wrapping ErrClosed after Close, ErrDeliveryTimeout past
// Config.DeliveryTimeout, ctx's error, or the broker's. done runs on the
// producer's goroutine (or at once, on this one): it must not block. Records
// produced by one goroutine are acknowledged in order.
func (t *Topic) ProduceAsync(ctx context.Context, partition int32, key, value []byte, done func(offset int64, err error)) {
	r := &kgo.Record{Topic: t.name, Partition: partition, Key: key, Value: value}
	t.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
		if err != nil {
			done(-1, &PartitionError{Topic: t.name, Partition: partition, Offset: -1, Err: translate(err)})
			return
		}
		done(r.Offset, nil)
	})
}

// NewReader returns a Reader of the topic that starts partition p at
// from[p], connected as the Topic is.
func (t *Topic) NewReader(from map[int32]int64) (*Reader, error) {
	if t.closed.Load() {
		return nil, fmt.Errorf("changelog: new reader of topic %q: %w", t.name, ErrClosed)
	}
	return newReader(t.name, from, append([]kgo.Opt{kgo.SeedBrokers(t.cfg.Brokers...)}, t.cfg.ClientOpts...)...)
}

// Close flushes the records still buffered (bounded by ctx: past it they
// fail with ErrClosed) and closes the connections. It is idempotent.
func (t *Topic) Close(ctx context.Context) error {
	var err error
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		err = t.cl.Flush(ctx)
		t.cl.Close()
	})
	return err
}

// translate maps the client's errors onto the package's.
func translate(err error) error {
	switch {
	case errors.Is(err, kgo.ErrClientClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, kgo.ErrRecordTimeout):
		return fmt.Errorf("%w: %w", ErrDeliveryTimeout, err)
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return fmt.Errorf("%w: %w", ErrTopicMissing, err)
	}
	return err
}
