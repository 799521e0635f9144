package changelog

import (
	"context"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Writer produces records to one topic and waits for each acknowledgement.
// It is safe for concurrent use; concurrent Produce calls share batches.
type Writer struct {
	topic string
	cl    *kgo.Client

	closeOnce sync.Once
}

// NewWriter returns a Writer for topic. opts carry the connection (brokers,
// TLS, SASL) and may set compression; the Writer always uses acks=all, the
// idempotent producer, no linger (a single record is sent at once; records
// produced while a request is in flight are batched) and explicit partitions.
func NewWriter(topic string, opts ...kgo.Opt) (*Writer, error) {
	all := append([]kgo.Opt{
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	}, opts...)
	all = append(all,
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		return nil, fmt.Errorf("changelog: new producer for topic %q: %w", topic, err)
	}
	return &Writer{topic: topic, cl: cl}, nil
}

// Admin returns an admin client sharing the Writer's connection. It is valid
// until Close.
func (w *Writer) Admin() *kadm.Client { return kadm.NewClient(w.cl) }

// Client returns the underlying kgo client (for partitioners and metadata).
func (w *Writer) Client() *kgo.Client { return w.cl }

// Produce writes key and value to partition and returns the record's offset
// once the broker has acknowledged it. A nil value is a tombstone. On error
// the record may or may not have been written; it was not acknowledged.
func (w *Writer) Produce(ctx context.Context, partition int32, key, value []byte) (int64, error) {
	r := &kgo.Record{Topic: w.topic, Partition: partition, Key: key, Value: value}
	if err := w.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		return -1, &PartitionError{Topic: w.topic, Partition: partition, Offset: -1, Err: err}
	}
	return r.Offset, nil
}

// ProduceAsync writes key and value to partition without waiting and calls
// done with the record's offset once the broker has acknowledged it, or with
// the error that failed it. done runs on the producer's goroutine: it must
// not block. Records produced by one goroutine are acknowledged in order.
func (w *Writer) ProduceAsync(ctx context.Context, partition int32, key, value []byte, done func(offset int64, err error)) {
	r := &kgo.Record{Topic: w.topic, Partition: partition, Key: key, Value: value}
	w.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
		if err != nil {
			done(-1, &PartitionError{Topic: w.topic, Partition: partition, Offset: -1, Err: err})
			return
		}
		done(r.Offset, nil)
	})
}

// Close flushes buffered records (bounded by ctx) and closes the connection.
// It is idempotent.
func (w *Writer) Close(ctx context.Context) error {
	var err error
	w.closeOnce.Do(func() {
		err = w.cl.Flush(ctx)
		w.cl.Close()
	})
	return err
}
