package changelog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Record is one data record of a partition. A nil Value is a tombstone.
// Key and Value belong to the Reader's caller; they are not copied again.
type Record struct {
	Key, Value []byte // as written; Value is nil for a tombstone
	Offset     int64  // the record's offset in its partition
}

// Batch is what one poll returned for one partition: the data records in
// offset order (control records left out) and Next, the offset after the last
// record the broker returned, control records included. Resume from Next.
type Batch struct {
	Partition int32
	Records   []Record // in offset order
	Next      int64    // the offset to resume from
	Bytes     int      // key and value bytes of Records
}

// Reader reads partitions of one topic from given start offsets with
// read_committed isolation. Partitions can be added and removed while it
// runs (Add, Remove) without disturbing the others. It is not safe for
// concurrent use.
type Reader struct {
	topic string
	cl    *kgo.Client
	byP   map[int32]int // reused: partition -> index in the returned batches
}

// newReader returns a Reader of topic that starts partition p at from[p].
// opts carry the connection; fetch sizes may be overridden with them.
func newReader(topic string, from map[int32]int64, opts ...kgo.Opt) (*Reader, error) {
	offs := make(map[int32]kgo.Offset, len(from))
	for p, o := range from {
		offs[p] = kgo.NewOffset().At(o)
	}
	all := append([]kgo.Opt{
		// Bounded so that a fetch and the records it decodes into stay small
		// next to the restore's sort memory: the heap must not grow with the
		// topic. A restore holds up to three polls at once (kgo's next fetch,
		// the poll being screened, the one being sorted), each about three
		// times its bytes on the heap (kgo's records, ours, the batches).
		// 4 MiB fetches (2 MiB a partition) made a 4M-record restore's peak
		// heap 1.16x a 1M one's on 6 partitions; 2 MiB ones (1 MiB a
		// partition) keep it within 1.02-1.09x and restore as fast; 1 MiB ones
		// gain nothing more (go run ./bench -only-large, in-process and
		// against Kafka 4.1.1). A batch larger than a fetch still comes whole.
		kgo.FetchMaxBytes(2 << 20),
		kgo.FetchMaxPartitionBytes(1 << 20),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}, opts...)
	all = append(all,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.ConsumeResetOffset(kgo.NoResetOffset()), // never skip past missing records
		kgo.RequiredAcks(kgo.AllISRAcks()),          // a reader produces nothing: whatever acks the caller set
	)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		return nil, fmt.Errorf("changelog: new consumer for topic %q: %w", topic, err)
	}
	return &Reader{topic: topic, cl: cl, byP: make(map[int32]int)}, nil
}

// Poll blocks until records arrive or ctx ends and returns one Batch per
// partition that had any, and the first error the fetches carried, if any.
// Batches and an error can come together: apply the batches first, since
// the Reader has moved past them, then handle the error. A partition whose
// next records are gone (deleted, expired or truncated) reports a
// *PartitionError wrapping ErrGap: the Reader does not skip them, and the
// caller must not carry on past the gap. Other errors (a broker that cannot
// be reached, a refused request) are reported as *PartitionError too; the
// Reader keeps trying, and a later Poll may succeed. ctx's error is returned
// when it ends with nothing fetched; ErrClosed after Close.
func (r *Reader) Poll(ctx context.Context) ([]Batch, error) {
	fs := r.cl.PollFetches(ctx)
	if fs.IsClientClosed() {
		return nil, fmt.Errorf("changelog: poll topic %q: %w", r.topic, ErrClosed)
	}
	if err := ctx.Err(); err != nil && fs.Empty() {
		return nil, err
	}
	var first error
	for _, fe := range fs.Errors() { // one error is reported: a gap first, since it needs the caller to act
		var dl *kgo.ErrDataLoss
		var err error
		switch {
		case errors.Is(fe.Err, context.Canceled) || errors.Is(fe.Err, context.DeadlineExceeded):
			err = fe.Err
		case errors.Is(fe.Err, kerr.OffsetOutOfRange) || errors.As(fe.Err, &dl):
			err = &PartitionError{Topic: fe.Topic, Partition: fe.Partition, Offset: -1, Err: fmt.Errorf("%w: %w", ErrGap, fe.Err)}
		default:
			err = &PartitionError{Topic: fe.Topic, Partition: fe.Partition, Offset: -1, Err: translate(fe.Err)}
		}
		if first == nil || (errors.Is(err, ErrGap) && !errors.Is(first, ErrGap)) {
			first = err
		}
	}
	clear(r.byP)
	var out []Batch
	fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) == 0 {
			return
		}
		i, ok := r.byP[ftp.Partition]
		if !ok {
			i = len(out)
			r.byP[ftp.Partition] = i
			out = append(out, Batch{Partition: ftp.Partition, Records: make([]Record, 0, len(ftp.Records))})
		}
		b := &out[i]
		for _, rec := range ftp.Records {
			b.Next = rec.Offset + 1
			if rec.Attrs.IsControl() {
				continue
			}
			b.Records = append(b.Records, Record{Key: rec.Key, Value: rec.Value, Offset: rec.Offset})
			b.Bytes += len(rec.Key) + len(rec.Value)
		}
	})
	return out, first
}

// Remove stops reading partitions ps: no later Poll returns anything of
// them, including what was fetched and not returned yet. The other
// partitions keep their positions (what was fetched of them and not
// returned is fetched again). Removing a partition not being read does
// nothing.
func (r *Reader) Remove(ps ...int32) {
	if len(ps) > 0 {
		r.cl.RemoveConsumePartitions(map[string][]int32{r.topic: ps})
	}
}

// Add starts reading partition p at offset from[p], for each p in from. A
// partition already being read must be removed first.
func (r *Reader) Add(from map[int32]int64) {
	if len(from) == 0 {
		return
	}
	offs := make(map[int32]kgo.Offset, len(from))
	for p, o := range from {
		offs[p] = kgo.NewOffset().At(o)
	}
	r.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{r.topic: offs})
}

// Close closes the Reader's connection. It is idempotent.
func (r *Reader) Close() { r.cl.Close() }
