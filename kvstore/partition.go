package kvstore

import (
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/changelog"
)

// Misrouted keys: a key found on a partition other than the one the store's
// partitioner picks. It means the topic's writers disagree on the partitioner
// (typically a librdkafka client, such as confluent-kafka-python, with its
// default consistent_random CRC32 partitioner next to a Java or franz-go
// client with murmur2). Then one key can have live versions in two
// partitions, and last-write-wins between them no longer holds.

// maxMisroutedKeys bounds how many distinct misrouted keys a store remembers
// in order to log each of them once (about 10k keys, their bytes plus map
// overhead). Past it, further keys are still counted but logged no more; one
// line says so.
const maxMisroutedKeys = 10_000

// misroutes is the detection's state. The restore and the follower never run
// at the same time, but Misrouted is called from anywhere.
type misroutes struct {
	count atomic.Int64

	mu   sync.Mutex
	seen map[string]struct{}
	full bool
}

// Misrouted returns how many records this store has read since Open (during
// restore and while following the topic) whose key sat on a partition other
// than the one its partitioner (WithPartitioner) picks. Each such key is also
// logged once (Warn, with both partitions). A record read again by a later
// restore counts again. Always 0 on a topic with one partition. Safe for
// concurrent use.
func (s *Store[V]) Misrouted() int64 { return s.mis.count.Load() }

// checkPartitions checks the key of every record in bs against the
// partitioner. It costs one hash of the key per record on topics with more
// than one partition, nothing on single-partition topics.
func (s *Store[V]) checkPartitions(bs []changelog.Batch) {
	n := s.info.Partitions
	if n <= 1 {
		return
	}
	for i := range bs {
		b := &bs[i]
		for _, r := range b.Records {
			if r.Key == nil {
				continue // no key, no partitioner choice (and poison anyway)
			}
			if want := s.part(r.Key, n); want != b.Partition {
				s.misrouted(r, b.Partition, want)
			}
		}
	}
}

// misrouted counts r, found on partition got instead of want, and logs its
// key the first time it shows up.
func (s *Store[V]) misrouted(r *kgo.Record, got, want int32) {
	s.mis.count.Add(1)
	m := &s.mis
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.seen[string(r.Key)]; dup {
		return
	}
	if len(m.seen) >= maxMisroutedKeys {
		if !m.full {
			m.full = true
			s.log.Warn("kvstore: more misrouted keys than are logged one by one; the rest are only counted (Misrouted)",
				"logged", maxMisroutedKeys)
		}
		return
	}
	if m.seen == nil {
		m.seen = make(map[string]struct{})
	}
	m.seen[string(r.Key)] = struct{}{}
	s.log.Warn("kvstore: key is on a partition its partitioner does not pick: the topic's writers use different partitioners, "+
		"so last-write-wins across them breaks (librdkafka clients: set partitioner=murmur2_random, "+
		"or open the store WithPartitioner(PartitionerCRC32))",
		"key", string(r.Key), "partition", got, "expected", want, "offset", r.Offset,
		"partitioner", s.cfg.partitioner.String())
}
