package kvstore

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The store's murmur2 partitioner must pick what franz-go's default (and the
// Java client's) picks for every key, or the store would look for keys in
// the wrong partition.
func TestMurmur2PicksWhatFranzGoPicks(t *testing.T) {
	tp := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	part := PartitionerMurmur2.hasher()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50_000 {
		key := make([]byte, i%40) // every tail length, and the empty key
		for j := range key {
			key[j] = byte(rng.UintN(256))
		}
		for _, n := range []int32{1, 2, 3, 6, 7, 64} {
			require.Equal(t, int32(tp.Partition(&kgo.Record{Key: key}, int(n))), part(key, n), "key %x, %d partitions", key, n)
		}
	}
}
