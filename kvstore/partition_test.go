package kvstore_test

import (
	"context"
	"hash/crc32"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/kvstore"
)

// librdkafkaCRC32 is librdkafka's default partitioner, consistent_random, for
// keyed records: crc32 (IEEE) of the key modulo the partition count.
func librdkafkaCRC32(key []byte, n int) int { return int(crc32.ChecksumIEEE(key) % uint32(n)) }

// warnings collects the message and "key" attribute of Warn records.
type warnings struct {
	mu   sync.Mutex
	logs [][2]string // message, key
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	var key string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "key" {
			key = a.Value.String()
		}
		return true
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	w.logs = append(w.logs, [2]string{r.Message, key})
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// misroutedKeys returns the keys logged as misrouted.
func (w *warnings) misroutedKeys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, l := range w.logs {
		if strings.Contains(l[0], "partitioner does not pick") {
			out = append(out, l[1])
		}
	}
	return out
}

func TestKeysFromALibrdkafkaDefaultPartitionerAreDetectedAsMisrouted(t *testing.T) {
	e := newEnv(t)
	e.open("", kvstore.Partitions(6)) // creates the 6-partition topic
	crc := e.foreignProducer(librdkafkaCRC32)
	keys := crc.users(60, "v1")
	var want int64
	for _, k := range keys {
		if librdkafkaCRC32([]byte(k), 6) != int(murmur2Partition(t, e, k)) {
			want++
		}
	}
	require.Greater(t, want, int64(30), "most keys differ between crc32 and murmur2")

	// Restore finds them, each logged once with both partitions.
	logs := &warnings{}
	s := e.open("", kvstore.Logger(slog.New(logs)))
	require.Equal(t, want, s.Stats().Misrouted)
	require.Len(t, logs.misroutedKeys(), int(want))
	got, ok, err := s.Get(ctxT(t), "user-7")
	require.NoError(t, err)
	require.True(t, ok, "a misrouted key is still found")
	require.Equal(t, "v1", got.FirstName)

	// The follower finds them too; a key seen again is counted, not logged again.
	crc.users(60, "v2")
	require.Eventually(t, func() bool { return s.Stats().Misrouted == 2*want }, 10*time.Second, 5*time.Millisecond)
	require.Len(t, logs.misroutedKeys(), int(want))

	// A store that uses the same partitioner as the writer sees nothing wrong.
	same := e.open("", kvstore.KeyPartitioner(kvstore.PartitionerCRC32))
	require.Zero(t, same.Stats().Misrouted)
}

func TestKeysFromAMurmur2PartitionerAreNotMisrouted(t *testing.T) {
	e := newEnv(t)
	s := e.open("", kvstore.Partitions(6))
	e.foreignProducer(nil).users(60, "v1") // kgo's default: murmur2, like Java's
	acked(t)(s.Put(ctxT(t), "own", User{FirstName: "own"}))
	r := e.open("")
	require.Len(t, contents(t, r), 61)
	require.Zero(t, r.Stats().Misrouted)
	require.Zero(t, s.Stats().Misrouted)
}

func TestTheCRC32PartitionerIsTheStandardIEEEOne(t *testing.T) {
	// The check value of CRC-32/ISO-HDLC (zlib's crc32, what librdkafka's
	// rd_crc32 computes; tests/python checks librdkafka itself).
	require.Equal(t, uint32(0xCBF43926), crc32.ChecksumIEEE([]byte("123456789")))
}

// murmur2Partition returns the partition kgo's default partitioner (murmur2)
// picks for key among 6.
func murmur2Partition(t *testing.T, _ *env, key string) int32 {
	t.Helper()
	tp := kgo.StickyKeyPartitioner(nil).ForTopic("")
	return int32(tp.Partition(&kgo.Record{Key: []byte(key)}, 6))
}
