package kvstore_test

// Benchmarks of restore, Get and Put on the in-process broker, each beside a
// baseline measured in the same run so that figures read as ratios:
//
//	go test -run '^$' -bench . -benchtime 3x ./kvstore/
//	go test -run '^$' -bench 'Restore|Baseline' -benchtime 3x ./kvstore/ -kvbench.n 1000000
//
// BenchmarkBaselineRawConsume is the broker-side ceiling (franz-go reading the
// topic and doing nothing with it), BenchmarkBaselineBoltSortedInsert the
// storage-side ceiling (the same keys, presorted, inserted into a fresh bbolt
// file in large transactions). The bench command (go run ./bench) prints the
// full side-by-side table, with goka's path and Kafka Streams.

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

var (
	benchN     = flag.Int("kvbench.n", 200_000, "records in the restore benchmarks' topic")
	benchParts = flag.Int("kvbench.partitions", 1, "partitions of the benchmarks' topic")
	benchLog   = flag.Bool("kvbench.log", false, "log the stores' debug output to stderr")
)

// benchData is a topic filled with n records of random 16-byte keys and
// ~44-byte Avro User values, on a fresh in-process broker.
type benchData struct {
	cluster *embedded.Cluster
	topic   string
	keys    [][]byte
	vals    [][]byte
	bytes   int64
}

func benchUser(rng *rand.Rand) User {
	return User{
		FirstName: fmt.Sprintf("first-%010d", rng.IntN(1e9)),
		LastName:  fmt.Sprintf("last-%012d", rng.Int64N(1e12)),
		Age:       int32(rng.IntN(100)),
	}
}

func newBenchData(b *testing.B, n int, partitions int32) *benchData {
	b.Helper()
	c, err := embedded.Start()
	require.NoError(b, err)
	b.Cleanup(c.Close)
	d := &benchData{cluster: c, topic: "bench"}
	// Open once: creates the compacted topic and registers the schema.
	s, err := kvstore.Open[User](context.Background(), d.topic, d.opts(b.TempDir(), kvstore.Partitions(partitions))...)
	require.NoError(b, err)
	require.NoError(b, s.Close())

	rc, err := sr.NewClient(sr.URLs(c.RegistryURL()))
	require.NoError(b, err)
	codec, err := serde.New[User](context.Background(), rc, serde.SubjectFor(d.topic), testdata.UserV2Schema, sr.CompatBackward)
	require.NoError(b, err)
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	d.keys, d.vals = make([][]byte, n), make([][]byte, n)
	for i := range n {
		k := make([]byte, 16)
		for j := 0; j < 16; j += 8 {
			v := rng.Uint64()
			for x := range 8 {
				k[j+x] = byte(v >> (8 * x))
			}
		}
		v, err := codec.Encode(benchUser(rng))
		require.NoError(b, err)
		d.keys[i], d.vals[i] = k, v
		d.bytes += int64(len(k) + len(v))
	}
	d.produce(b, d.keys, d.vals)
	return d
}

func (d *benchData) opts(dir string, extra ...kvstore.Option) []kvstore.Option {
	if *benchLog {
		extra = append(extra, kvstore.Logger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	}
	return append([]kvstore.Option{
		kvstore.Brokers(d.cluster.Brokers()...),
		kvstore.Registry(d.cluster.RegistryURL()),
		kvstore.ValueSchema(testdata.UserV2Schema),
		kvstore.Dir(dir),
	}, extra...)
}

// produce writes the records with the store's partitioner (murmur2).
func (d *benchData) produce(b *testing.B, keys, vals [][]byte) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.cluster.Brokers()...), kgo.DefaultProduceTopic(d.topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(100_000))
	require.NoError(b, err)
	defer cl.Close()
	var failed atomic.Pointer[error]
	for i := range keys {
		cl.Produce(context.Background(), &kgo.Record{Key: keys[i], Value: vals[i]}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(&err)
			}
		})
	}
	require.NoError(b, cl.Flush(context.Background()))
	if e := failed.Load(); e != nil {
		require.NoError(b, *e)
	}
}

func (d *benchData) open(b *testing.B, dir string, extra ...kvstore.Option) *kvstore.Store[User] {
	s, err := kvstore.Open[User](context.Background(), d.topic, d.opts(dir, extra...)...)
	require.NoError(b, err)
	return s
}

func reportRate(b *testing.B, what string, n int64, d time.Duration) {
	b.ReportMetric(float64(n)/d.Seconds(), what)
}

// reportCPU reports the process's CPU time since cpu0 per operation.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// BenchmarkRestoreFull opens a store on an empty cache directory: a full
// restore of kvbench.n records.
func BenchmarkRestoreFull(b *testing.B) {
	d := newBenchData(b, *benchN, int32(*benchParts))
	var records int64
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		b.StartTimer()
		s := d.open(b, dir)
		b.StopTimer()
		st := s.Stats().Restore
		require.Equal(b, "full", st.Mode)
		records += st.Records
		took += st.Duration
		s.Close()
		os.RemoveAll(dir)
		b.StartTimer()
	}
	reportRate(b, "records/s", records, took)
	b.ReportMetric(float64(d.bytes)*float64(b.N)/took.Seconds()/1e6, "MB/s")
}

// BenchmarkRestoreDelta reopens a restored cache after 1% of the keys
// changed: a delta restore of kvbench.n/100 records.
func BenchmarkRestoreDelta(b *testing.B) {
	d := newBenchData(b, *benchN, int32(*benchParts))
	dir := b.TempDir()
	d.open(b, dir).Close()
	rng := rand.New(rand.NewPCG(3, 4))
	var records int64
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		n := max(len(d.keys)/100, 1)
		keys, vals := make([][]byte, n), make([][]byte, n)
		for i := range n {
			j := rng.IntN(len(d.keys))
			keys[i], vals[i] = d.keys[j], d.vals[rng.IntN(len(d.vals))]
		}
		d.produce(b, keys, vals)
		b.StartTimer()
		s := d.open(b, dir)
		b.StopTimer()
		st := s.Stats().Restore
		require.Equal(b, "delta", st.Mode, st.Reason)
		records += st.Records
		took += st.Duration
		s.Close()
		b.StartTimer()
	}
	reportRate(b, "records/s", records, took)
}

// BenchmarkBaselineRawConsume reads the topic with franz-go and drops the
// records: the broker-side ceiling of a restore.
func BenchmarkBaselineRawConsume(b *testing.B) {
	d := newBenchData(b, *benchN, int32(*benchParts))
	var records int64
	var took time.Duration
	for b.Loop() {
		start := time.Now()
		cl, err := kgo.NewClient(kgo.SeedBrokers(d.cluster.Brokers()...), kgo.ConsumeTopics(d.topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20))
		require.NoError(b, err)
		var n int64
		for n < int64(len(d.keys)) {
			fs := cl.PollFetches(context.Background())
			require.NoError(b, fs.Err0())
			n += int64(fs.NumRecords())
		}
		cl.Close()
		records += n
		took += time.Since(start)
	}
	reportRate(b, "records/s", records, took)
}

// BenchmarkBaselineBoltSortedInsert inserts the same keys and values,
// presorted, into a fresh bbolt file in transactions of 200,000 with
// FillPercent 1.0 and one Sync at the end: the storage-side ceiling.
func BenchmarkBaselineBoltSortedInsert(b *testing.B) {
	n := *benchN
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = binary16(rng)
	}
	val := bytes.Repeat([]byte{'v'}, 44)
	slices.SortFunc(keys, bytes.Compare)
	var took time.Duration
	for b.Loop() {
		start := time.Now()
		boltSortedInsert(b, filepath.Join(b.TempDir(), "x.db"), keys, val)
		took += time.Since(start)
	}
	reportRate(b, "records/s", int64(n)*int64(b.N), took)
}

// binary16 returns 16 random bytes.
func binary16(rng *rand.Rand) []byte {
	k := binary.LittleEndian.AppendUint64(make([]byte, 0, 16), rng.Uint64())
	return binary.LittleEndian.AppendUint64(k, rng.Uint64())
}

func boltSortedInsert(b *testing.B, path string, keys [][]byte, val []byte) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	require.NoError(b, err)
	for i := 0; i < len(keys); i += 200_000 {
		require.NoError(b, db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("data"))
			if err != nil {
				return err
			}
			bk.FillPercent = 1.0
			for _, k := range keys[i:min(i+200_000, len(keys))] {
				if err := bk.Put(k, val); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	require.NoError(b, db.Sync())
	require.NoError(b, db.Close())
}

// latencies records per-operation durations and reports p50/p99.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(ds []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, ds...)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) {
	if len(l.d) == 0 {
		return
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	b.ReportMetric(float64(l.d[len(l.d)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(l.d[len(l.d)*99/100].Nanoseconds()), "p99-ns")
}

// openForGets restores a store of kvbench.n keys and returns it with its
// keys.
func openForGets(b *testing.B) (*kvstore.Store[User], []string) {
	d := newBenchData(b, *benchN, int32(*benchParts))
	s := d.open(b, b.TempDir())
	b.Cleanup(func() { s.Close() })
	keys := make([]string, len(d.keys))
	for i, k := range d.keys {
		keys[i] = string(k)
	}
	return s, keys
}

// BenchmarkGet reads random existing keys and decodes them into User.
func BenchmarkGet(b *testing.B) {
	s, keys := openForGets(b)
	ctx := context.Background()
	var lat latencies
	ds := make([]time.Duration, 0, 1<<16)
	i := 0
	start, cpu0 := time.Now(), cpuTime()
	for b.Loop() {
		t := time.Now()
		_, ok, err := s.Get(ctx, keys[i%len(keys)])
		if len(ds) < cap(ds) {
			ds = append(ds, time.Since(t))
		}
		if err != nil || !ok {
			b.Fatal(err, ok)
		}
		i += 7919
	}
	reportRate(b, "gets/s", int64(b.N), time.Since(start))
	reportCPU(b, cpu0)
	lat.add(ds)
	lat.report(b)
}

// BenchmarkGetParallel is BenchmarkGet on GOMAXPROCS goroutines.
func BenchmarkGetParallel(b *testing.B) {
	s, keys := openForGets(b)
	ctx := context.Background()
	parallelGets(b, len(keys), func(i int) bool {
		if _, ok, err := s.Get(ctx, keys[i]); err != nil || !ok {
			b.Error(err, ok)
			return false
		}
		return true
	})
}

// parallelGets runs get on GOMAXPROCS goroutines, each over the indexes
// below n in its own order, until b.N calls or one returns false, and
// reports gets/s and CPU per get.
func parallelGets(b *testing.B, n int, get func(i int) bool) {
	var seed atomic.Int64
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(1)) * 104729
		for pb.Next() {
			if !get(i % n) {
				return
			}
			i += 7919
		}
	})
	reportRate(b, "gets/s", int64(b.N), time.Since(start))
	reportCPU(b, cpu0)
}

// boltForGets writes kvbench.n random 16-byte keys with 44-byte values into
// a bbolt file and returns it open, with the keys.
func boltForGets(b *testing.B) (*bolt.DB, [][]byte) {
	rng := rand.New(rand.NewPCG(1, 1))
	keys := make([][]byte, *benchN)
	for i := range keys {
		keys[i] = binary16(rng)
	}
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, bytes.Compare)
	path := filepath.Join(b.TempDir(), "x.db")
	boltSortedInsert(b, path, sorted, bytes.Repeat([]byte{'v'}, 44))
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(b, err)
	b.Cleanup(func() { db.Close() })
	return db, keys
}

// BenchmarkBaselineBoltGet is the bbolt lookup alone (copy of the value, no
// decode) in a table of kvbench.n keys, the storage-side floor of Get.
func BenchmarkBaselineBoltGet(b *testing.B) {
	db, keys := boltForGets(b)
	i := 0
	cpu0 := cpuTime()
	for b.Loop() {
		_ = db.View(func(tx *bolt.Tx) error {
			_ = bytes.Clone(tx.Bucket([]byte("data")).Get(keys[i%len(keys)]))
			return nil
		})
		i += 7919
	}
	reportCPU(b, cpu0)
}

// BenchmarkBaselineBoltGetParallel is BenchmarkBaselineBoltGet on
// GOMAXPROCS goroutines: how far bbolt's own read transactions scale.
func BenchmarkBaselineBoltGetParallel(b *testing.B) {
	db, keys := boltForGets(b)
	parallelGets(b, len(keys), func(i int) bool {
		_ = db.View(func(tx *bolt.Tx) error {
			_ = bytes.Clone(tx.Bucket([]byte("data")).Get(keys[i]))
			return nil
		})
		return true
	})
}

// openForPuts restores a store of a small topic (1000 keys) to write to.
func openForPuts(b *testing.B) *kvstore.Store[User] {
	s := newBenchData(b, 1000, int32(*benchParts)).open(b, b.TempDir())
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkPut is one caller's synchronous Put (acks=all, waits for the ack).
func BenchmarkPut(b *testing.B) {
	s := openForPuts(b)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	u := benchUser(rng)
	var lat latencies
	ds := make([]time.Duration, 0, 1<<16)
	start := time.Now()
	for b.Loop() {
		t := time.Now()
		if _, err := s.Put(ctx, string(binary16(rng)), u); err != nil {
			b.Fatal(err)
		}
		if len(ds) < cap(ds) {
			ds = append(ds, time.Since(t))
		}
	}
	reportRate(b, "puts/s", int64(b.N), time.Since(start))
	lat.add(ds)
	lat.report(b)
}

// BenchmarkPutConcurrent is Put from 64 concurrent callers.
func BenchmarkPutConcurrent(b *testing.B) {
	s := openForPuts(b)
	ctx := context.Background()
	var seed atomic.Uint64
	b.SetParallelism(max(64/runtimeProcs(), 1))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 9))
		u := benchUser(rng)
		for pb.Next() {
			if _, err := s.Put(ctx, string(binary16(rng)), u); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b, "puts/s", int64(b.N), time.Since(start))
}

// BenchmarkBaselineRawProduceSync is franz-go's ProduceSync with the store's
// producer settings (acks=all, idempotent, no linger): the floor of Put.
func BenchmarkBaselineRawProduceSync(b *testing.B) {
	d := newBenchData(b, 1000, int32(*benchParts))
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.cluster.Brokers()...), kgo.DefaultProduceTopic(d.topic),
		kgo.ProducerLinger(0), kgo.RequiredAcks(kgo.AllISRAcks()))
	require.NoError(b, err)
	defer cl.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	val := d.vals[0]
	for b.Loop() {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Key: binary16(rng), Value: val}).FirstErr(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutVisible measures Put through one store until another store on
// the same topic returns the new value from Get.
func BenchmarkPutVisible(b *testing.B) {
	d := newBenchData(b, 1000, int32(*benchParts))
	w := d.open(b, b.TempDir())
	defer w.Close()
	r := d.open(b, b.TempDir())
	defer r.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	var lat latencies
	var ds []time.Duration
	for b.Loop() {
		key, u := string(binary16(rng)), benchUser(rng)
		t := time.Now()
		acked(b)(w.Put(ctx, key, u))
		for {
			got, ok, err := r.Get(ctx, key)
			require.NoError(b, err)
			if ok && got.LastName == u.LastName {
				break
			}
			if time.Since(t) > 10*time.Second {
				b.Fatal("not visible after 10s")
			}
			time.Sleep(20 * time.Microsecond)
		}
		ds = append(ds, time.Since(t))
	}
	lat.add(ds)
	lat.report(b)
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// BenchmarkPutAsync: Puts/s through PutAsync from one goroutine, at most
// 4096 in flight.
func BenchmarkPutAsync(b *testing.B) {
	s := openForPuts(b)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 9))
	u := benchUser(rng)
	window := make(chan struct{}, 4096) // a slot per write in flight
	var inFlight sync.WaitGroup
	var firstErr sync.Once
	var failed error
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		window <- struct{}{}
		inFlight.Add(1)
		s.PutAsync(ctx, string(binary16(rng)), u, func(_ kvstore.Position, err error) {
			if err != nil {
				firstErr.Do(func() { failed = err })
			}
			<-window
			inFlight.Done()
		})
	}
	inFlight.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
	reportRate(b, "puts/s", int64(b.N), time.Since(start))
}
