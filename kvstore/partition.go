package kvstore

import (
	"sync"
	"sync/atomic"

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
// at the same time, but Stats reads the count from anywhere.
type misroutes struct {
	count atomic.Int64

	mu   sync.Mutex
	seen map[string]struct{}
	full bool
}

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
		for j := range b.Records {
			r := &b.Records[j]
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
func (s *Store[V]) misrouted(r *changelog.Record, got, want int32) {
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
		"or open the store with KeyPartitioner(PartitionerCRC32))",
		"key", string(r.Key), "partition", got, "expected", want, "offset", r.Offset,
		"partitioner", s.cfg.partitioner.String())
}
