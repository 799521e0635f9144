// Command bench measures compactkv's restore, Get and Put beside baselines
// measured in the same run, on the same data and broker, and writes the
// results as a Markdown table (BENCHMARKS.md):
//
//	go run ./bench                                   # N=1,000,000, 3 runs, in-process broker
//	go run ./bench -real-brokers 127.0.0.1:9092      # also on a real Kafka broker (or COMPACTKV_BROKERS)
//	go run ./bench -n 20000 -runs 1 -out /tmp/x.md   # the small CI run
//	go run ./bench -quick -out /tmp/x.md             # smaller still (N=20,000; targets do not apply)
//	go run ./bench -only-large -goka=false -streams=false -out /tmp/x.md
//	                                                 # only raw consume against full restore, at -n and
//	                                                 # -large: the restore and heap targets in ~1 min a broker
//
// Environment for the restores' child process: COMPACTKV_BENCH_LOG=1 logs
// each restore's own line (its reading and writing phases) on stderr;
// COMPACTKV_BENCH_CPUPROFILE=path writes a CPU profile of Open to path (each
// child overwrites it: the last restore's is left; a profiled run's figures
// are not comparable with others).
//
// Baselines: (1) franz-go consuming the topic and dropping the records (the
// broker-side ceiling), in a process of its own as our restores run (the
// targets' figure) and in this process (its heap grown by producing), (2) bbolt alone inserting the same keys, presorted,
// in large transactions (the storage-side ceiling), (3) goka's recovery path
// (bench/goka, built and run as a subprocess), (4) a Kafka Streams
// GlobalKTable restore (bench/streams, real broker only).
//
// Our restores run in a subprocess of this binary (the same binary with
// -child-restore), so that their peak RSS (VmHWM) and Go heap are theirs alone.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	bolt "go.etcd.io/bbolt"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

// User is the seed guide's User (testdata/user-v2.avsc).
type User struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int32   `avro:"age"`
	Email     *string `avro:"email"`
}

var (
	flagN         = flag.Int("n", 1_000_000, "records per topic")
	flagRuns      = flag.Int("runs", 3, "runs per figure (the table shows median (min, max))")
	flagOut       = flag.String("out", "BENCHMARKS.md", "output file")
	flagReal      = flag.String("real-brokers", os.Getenv("COMPACTKV_BROKERS"), "a real Kafka broker for the second set of rows (default $COMPACTKV_BROKERS; empty: skipped)")
	flagParts     = flag.String("partitions", "1,6", "partition counts")
	flagVersions  = flag.Int("versions", 10, "versions per key of the compaction topic (n/versions keys)")
	flagGoka      = flag.Bool("goka", true, "run goka's path (builds bench/goka)")
	flagStreams   = flag.Bool("streams", true, "run Kafka Streams on the real broker (builds bench/streams if its jar is missing)")
	flagOpDur     = flag.Duration("op-time", 2*time.Second, "how long each Get/Put measurement runs")
	flagMem       = flag.Int("restore-memory", 64<<20, "kvstore.RestoreMemory for our restores")
	flagQuick     = flag.Bool("quick", false, "shorthand for -n 20000 -runs 1 -op-time 300ms -large 40000")
	flagOnlyPart  = flag.Bool("only-partitioned", false, "run only partitioned mode's section (on the topics of 3 partitions or more): no baselines, full or delta restores, Get/Put, large tables or versions")
	flagOnlyLarge = flag.Bool("only-large", false, "run only the large-table section (raw consume against full restore at -n and at -large, or at -n alone with -large 0): the quickest way to re-measure the restore ratio and heap targets")
	flagFailover  = flag.Bool("failover", true, "time partitioned mode's failovers (each waits out a 6s session)")

	// child mode
	flagChild    = flag.Bool("child-restore", false, "internal: open a store, print its restore as JSON, exit")
	flagChildRaw = flag.Bool("child-raw", false, "internal: consume the topic raw (baseline 1), print records and seconds as JSON, exit")
	flagBrokers  = flag.String("brokers", "", "internal (child)")
	flagRegistry = flag.String("registry", "", "internal (child)")
	flagTopic    = flag.String("topic", "", "internal (child)")
	flagDir      = flag.String("dir", "", "internal (child)")
)

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	if *flagChild {
		childRestore()
		return
	}
	if *flagChildRaw {
		childRaw()
		return
	}
	if *flagQuick {
		*flagN, *flagRuns, *flagOpDur, *flagLarge = 20_000, 1, 300*time.Millisecond, 40_000
	}
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

// restoreResult is what a child restore prints.
type restoreResult struct {
	Mode      string  `json:"mode"`
	Records   int64   `json:"records"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`         // Open, wall clock
	Restore   float64 `json:"restore_seconds"` // RestoreStats.Duration
	HeapPeak  uint64  `json:"heap_peak_bytes"` // peak of /memory/classes/heap/objects:bytes
	RSSPeak   uint64  `json:"rss_peak_bytes"`  // VmHWM
	HeapStart uint64  `json:"heap_start_bytes"`
	Close     float64 `json:"close_seconds"` // Close, wall clock: it waits for the follower to write a delta Open served from memory
}

func childRestore() {
	var peak, start atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	start.Store(sample[0].Value.Uint64())
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	opts := []kvstore.Option{kvstore.Brokers(*flagBrokers), kvstore.Registry(*flagRegistry),
		kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(*flagDir), kvstore.RestoreMemory(*flagMem)}
	if os.Getenv("COMPACTKV_BENCH_LOG") != "" {
		// The restore's own log line (its reading and writing phases) on stderr.
		opts = append(opts, kvstore.Logger(slog.New(slog.NewTextHandler(os.Stderr, nil))))
	}
	if path := os.Getenv("COMPACTKV_BENCH_CPUPROFILE"); path != "" {
		// A CPU profile of Open, for finding where a restore's time goes.
		f, err := os.Create(path)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer f.Close()
	}
	began := time.Now()
	s, err := kvstore.Open[User](context.Background(), *flagTopic, opts...)
	pprof.StopCPUProfile()
	took := time.Since(began)
	close(stop)
	<-done
	if err != nil {
		log.Fatal(err)
	}
	st := s.Stats().Restore
	closing := time.Now()
	s.Close()
	json.NewEncoder(os.Stdout).Encode(restoreResult{Mode: st.Mode, Records: st.Records, Bytes: st.Bytes,
		Seconds: took.Seconds(), Restore: st.Duration.Seconds(), HeapPeak: peak.Load(), RSSPeak: vmHWM(),
		HeapStart: start.Load(), Close: time.Since(closing).Seconds()})
}

func vmHWM() uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.ParseUint(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// env is one broker (in-process or real) with a registry.
type env struct {
	name     string
	brokers  []string
	registry string
	real     bool
	cluster  *embedded.Cluster // in-process only
	adm      *kadm.Client
	cl       *kgo.Client
	tmp      string
	suffix   string
}

// series is one figure's values over the runs.
type series []float64

func (s series) stats() (med, lo, hi float64, ok bool) {
	if len(s) == 0 {
		return 0, 0, 0, false
	}
	c := slices.Clone(s)
	sort.Float64s(c)
	return c[len(c)/2], c[0], c[len(c)-1], true
}

// results maps env -> partitions -> figure -> values.
type results struct {
	mu   sync.Mutex
	m    map[string]map[int]map[string]series
	note map[string]string
}

func (r *results) add(env string, parts int, fig string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[env] == nil {
		r.m[env] = map[int]map[string]series{}
	}
	if r.m[env][parts] == nil {
		r.m[env][parts] = map[string]series{}
	}
	r.m[env][parts][fig] = append(r.m[env][parts][fig], v)
}

func (r *results) get(env string, parts int, fig string) series { return r.m[env][parts][fig] }

var versions = map[string]string{}

func run() error {
	began := time.Now()
	tmp, err := os.MkdirTemp("", "compactkv-bench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	parts := []int{}
	for _, p := range strings.Split(*flagParts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return fmt.Errorf("-partitions: %w", err)
		}
		parts = append(parts, n)
	}
	lparts, err := largeParts()
	if err != nil {
		return err
	}
	res := &results{m: map[string]map[int]map[string]series{}, note: map[string]string{}}

	gokaBin := ""
	if *flagGoka {
		gokaBin = filepath.Join(tmp, "goka-path")
		cmd := exec.Command("go", "build", "-o", gokaBin, ".")
		cmd.Dir = "bench/goka"
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			log.Printf("goka's path not built (%v): its rows are left out", err)
			gokaBin = ""
		}
		if b, err := os.ReadFile("bench/goka/go.mod"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				f := strings.Fields(l)
				if len(f) == 2 && (strings.Contains(f[0], "sarama") || strings.Contains(f[0], "goleveldb")) {
					versions[f[0]] = f[1]
				}
			}
		}
	}

	envs := []*env{}
	c, err := embedded.Start()
	if err != nil {
		return err
	}
	defer c.Close()
	envs = append(envs, &env{name: "in-process broker (kfake)", brokers: c.Brokers(), registry: c.RegistryURL(), cluster: c})
	if *flagReal != "" {
		reg, stopReg, err := startRegistry()
		if err != nil {
			return err
		}
		defer stopReg()
		envs = append(envs, &env{name: "real Kafka broker", brokers: strings.Split(*flagReal, ","), registry: reg, real: true})
	}
	streamsJar := ""
	if *flagReal != "" && *flagStreams {
		streamsJar = "bench/streams/target/streams-bench.jar"
		if _, err := os.Stat(streamsJar); err != nil {
			cmd := exec.Command("mvn", "-q", "-B", "-DskipTests", "package")
			cmd.Dir, cmd.Stderr = "bench/streams", os.Stderr
			if err := cmd.Run(); err != nil {
				log.Printf("Kafka Streams bench not built (%v): its rows are left out", err)
				streamsJar = ""
			}
		}
	}

	for _, e := range envs {
		e.tmp = tmp
		e.suffix = strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
			kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(200_000), kgo.ProducerBatchMaxBytes(1<<20))
		if err != nil {
			return err
		}
		e.cl, e.adm = cl, kadm.NewClient(cl)
		for _, p := range parts {
			if *flagOnlyLarge {
				break
			}
			if err := benchTopic(e, p, res, gokaBin, streamsJar); err != nil {
				return fmt.Errorf("%s, %d partitions: %w", e.name, p, err)
			}
		}
		if (*flagLarge > 0 || *flagOnlyLarge) && !*flagOnlyPart {
			for _, p := range lparts {
				if err := benchLarge(e, p, res); err != nil {
					return fmt.Errorf("%s, %d partitions, large table: %w", e.name, p, err)
				}
			}
		}
		if !e.real && !*flagOnlyPart && !*flagOnlyLarge {
			if err := benchVersions(e, res); err != nil {
				return fmt.Errorf("%s, versions: %w", e.name, err)
			}
		}
		cl.Close()
	}
	return writeReport(res, envs, parts, lparts, time.Since(began))
}

// startRegistry serves an srfake registry over HTTP for the real broker's rows.
func startRegistry() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: srfake.NewRegistry().Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// dataset is a topic's records as they were produced.
type dataset struct {
	topic string
	parts int
	keys  [][]byte
	vals  [][]byte
	bytes int64
	codec *serde.Codec[User]
	rng   *rand.Rand
}

func newUser(rng *rand.Rand) User {
	return User{
		FirstName: fmt.Sprintf("first-%010d", rng.IntN(1e9)),
		LastName:  fmt.Sprintf("last-%012d", rng.Int64N(1e12)),
		Age:       int32(rng.IntN(100)),
	}
}

func randKey(rng *rand.Rand) []byte {
	k := make([]byte, 16)
	for j := 0; j < 16; j += 8 {
		v := rng.Uint64()
		for x := range 8 {
			k[j+x] = byte(v >> (8 * x))
		}
	}
	return k
}

// createTopic makes a compacted topic and registers the value schema.
func createTopic(ctx context.Context, e *env, topic string, parts int) (*dataset, error) {
	resp, err := e.adm.CreateTopic(ctx, int32(parts), -1, map[string]*string{"cleanup.policy": ptr("compact")}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return nil, fmt.Errorf("create topic %s: %w", topic, err)
	}
	rc, err := sr.NewClient(sr.URLs(e.registry))
	if err != nil {
		return nil, err
	}
	codec, err := serde.New[User](ctx, rc, serde.SubjectFor(topic), testdata.UserV2Schema, sr.CompatBackward)
	if err != nil {
		return nil, err
	}
	return &dataset{topic: topic, parts: parts, codec: codec, rng: rand.New(rand.NewPCG(uint64(parts), 42))}, nil
}

func ptr[T any](v T) *T { return &v }

// produce writes the records with murmur2 partitioning (the store's default).
func produce(ctx context.Context, e *env, topic string, keys, vals [][]byte) error {
	var failed atomic.Pointer[error]
	for i := range keys {
		e.cl.Produce(ctx, &kgo.Record{Topic: topic, Key: keys[i], Value: vals[i]}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(&err)
			}
		})
	}
	if err := e.cl.Flush(ctx); err != nil {
		return err
	}
	if p := failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (d *dataset) fill(ctx context.Context, e *env, n int) error {
	d.keys, d.vals = make([][]byte, n), make([][]byte, n)
	for i := range n {
		v, err := d.codec.Encode(newUser(d.rng))
		if err != nil {
			return err
		}
		d.keys[i], d.vals[i] = randKey(d.rng), v
		d.bytes += int64(len(d.keys[i]) + len(v))
	}
	avgValBytes = float64(d.bytes)/float64(max(n, 1)) - 16
	return produce(ctx, e, d.topic, d.keys, d.vals)
}

// fullRestore runs our restore of topic in a subprocess on an empty cacheDir
// and checks that it was a full one.
func fullRestore(e *env, topic, cacheDir string) (restoreResult, error) {
	os.RemoveAll(cacheDir)
	o, err := childRun(e, topic, cacheDir)
	if err == nil && o.Mode != "full" {
		err = fmt.Errorf("expected a full restore, got %q", o.Mode)
	}
	return o, err
}

// childRun runs our restore in a subprocess.
func childRun(e *env, topic, dir string) (restoreResult, error) {
	var out restoreResult
	self, err := os.Executable()
	if err != nil {
		return out, err
	}
	cmd := exec.Command(self, "-child-restore", "-brokers", strings.Join(e.brokers, ","), "-registry", e.registry,
		"-topic", topic, "-dir", dir, "-restore-memory", strconv.Itoa(*flagMem))
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("child restore: %w", err)
	}
	return out, json.Unmarshal(b, &out)
}

type extResult struct {
	Records       int64   `json:"records"`
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"records_per_sec"`
	PeakRSS       uint64  `json:"peak_rss_bytes"`
	StreamsVer    string  `json:"kafka_streams_version"`
}

func runJSON(cmd *exec.Cmd) (extResult, error) {
	var out extResult
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w", cmd.Path, err)
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return out, json.Unmarshal(lines[len(lines)-1], &out)
}

// childRaw is baseline 1 in a process of its own, as our restores run: a
// fresh process's heap and memory are not those of the bench, which has
// just produced the topic.
func childRaw() {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*flagBrokers, ",")...))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	e := &env{brokers: strings.Split(*flagBrokers, ","), adm: kadm.NewClient(cl)}
	n, d, err := rawConsume(context.Background(), e, *flagTopic)
	if err != nil {
		log.Fatal(err)
	}
	json.NewEncoder(os.Stdout).Encode(restoreResult{Records: n, Seconds: d.Seconds()})
}

// rawConsumes times baseline 1 twice: in a subprocess of this binary, as
// our restores run (fresh, the figure the targets judge against), and in
// this process, whose heap producing the topic has already grown (warm).
func rawConsumes(ctx context.Context, e *env, topic string) (fresh, warm float64, err error) {
	rn, rd, err := rawConsume(ctx, e, topic)
	if err != nil {
		return 0, 0, fmt.Errorf("raw consume: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(self, "-child-raw", "-brokers", strings.Join(e.brokers, ","), "-topic", topic)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("raw consume in a child: %w", err)
	}
	var o restoreResult
	if err := json.Unmarshal(b, &o); err != nil {
		return 0, 0, fmt.Errorf("raw consume in a child: %w", err)
	}
	return float64(o.Records) / o.Seconds, float64(rn) / rd.Seconds(), nil
}

// rawConsume reads every record up to the current end offsets and drops
// them, timed from the client's creation.
func rawConsume(ctx context.Context, e *env, topic string) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute) // a record count that is never reached fails, not hangs
	defer cancel()
	ends, err := e.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, 0, err
	}
	var want int64
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	start := time.Now()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20))
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	var n int64
	for n < want {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return n, 0, err
		}
		n += int64(fs.NumRecords())
	}
	return n, time.Since(start), nil
}

// boltSorted inserts keys (sorted) with val into a fresh bbolt file in
// transactions of 200,000, FillPercent 1.0, NoSync and one Sync at the end.
func boltSorted(path string, keys [][]byte, vals [][]byte) (time.Duration, error) {
	start := time.Now()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	for i := 0; i < len(keys); i += 200_000 {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("data"))
			if err != nil {
				return err
			}
			b.FillPercent = 1.0
			for j := i; j < min(i+200_000, len(keys)); j++ {
				if err := b.Put(keys[j], vals[j]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return 0, err
		}
	}
	if err := db.Sync(); err != nil {
		return 0, err
	}
	return time.Since(start), db.Close()
}

func pct(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return float64(ds[min(len(ds)*p/100, len(ds)-1)].Nanoseconds()) / 1e3 // µs
}

// filledTopic creates topic with parts partitions and produces n records
// of random keys and User values to it.
func filledTopic(ctx context.Context, e *env, topic string, parts, n int) (*dataset, error) {
	log.Printf("%s, %d partitions: producing %d records to %s", e.name, parts, n, topic)
	d, err := createTopic(ctx, e, topic, parts)
	if err != nil {
		return nil, err
	}
	return d, d.fill(ctx, e, n)
}

func benchTopic(e *env, parts int, res *results, gokaBin, streamsJar string) error {
	ctx := context.Background()
	n := *flagN
	topic := fmt.Sprintf("bench-%d-%s", parts, e.suffix)
	d, err := filledTopic(ctx, e, topic, parts, n)
	if err != nil {
		return err
	}
	if e.real {
		defer e.adm.DeleteTopics(context.Background(), topic)
	}
	sorted := make([]int, n)
	for i := range sorted {
		sorted[i] = i
	}
	slices.SortFunc(sorted, func(a, b int) int { return bytes.Compare(d.keys[a], d.keys[b]) })
	sk, sv := make([][]byte, n), make([][]byte, n)
	for i, j := range sorted {
		sk[i], sv[i] = d.keys[j], d.vals[j]
	}
	add := func(fig string, v float64) { res.add(e.name, parts, fig, v) }
	cacheDir := filepath.Join(e.tmp, topic)
	if *flagOnlyPart {
		if parts < 3 {
			return nil
		}
		log.Printf("  partitioned mode")
		return benchPartitioned(e, d, res)
	}
	for r := range *flagRuns {
		log.Printf("  run %d/%d", r+1, *flagRuns)
		// (1) raw consume
		fresh, warm, err := rawConsumes(ctx, e, topic)
		if err != nil {
			return err
		}
		add("raw", fresh)
		add("raw_warm", warm)
		// (2) bbolt alone
		bd, err := boltSorted(filepath.Join(e.tmp, "bolt.db"), sk, sv)
		if err != nil {
			return fmt.Errorf("bbolt baseline: %w", err)
		}
		add("bolt", float64(n)/bd.Seconds())
		// (3) goka's path
		if gokaBin != "" {
			g, err := runJSON(exec.Command(gokaBin, "-brokers", strings.Join(e.brokers, ","), "-topic", topic,
				"-dir", filepath.Join(e.tmp, "goka")))
			if err != nil {
				return fmt.Errorf("goka's path: %w", err)
			}
			add("goka", g.RecordsPerSec)
			add("goka_rss", float64(g.PeakRSS))
		}
		// (4) Kafka Streams
		if streamsJar != "" && e.real {
			s, err := runJSON(exec.Command("java", "-Xmx1g", "-jar", streamsJar, "--brokers", strings.Join(e.brokers, ","), "--topic", topic))
			if err != nil {
				log.Printf("Kafka Streams: %v", err)
			} else {
				add("streams", s.RecordsPerSec)
				add("streams_rss", float64(s.PeakRSS))
				versions["Kafka Streams"] = s.StreamsVer
			}
		}
		// ours, full
		o, err := fullRestore(e, topic, cacheDir)
		if err != nil {
			return err
		}
		add("full", float64(o.Records)/o.Seconds)
		add("full_s", o.Seconds)
		add("full_mb", float64(o.Bytes)/o.Seconds/1e6)
		add("full_heap", float64(o.HeapPeak))
		add("full_rss", float64(o.RSSPeak))
	}
	// delta: 1% of the keys changed, on the cache the last full restore left
	// (the first run), then on the cache the delta before left (the runs
	// after: the usual case, where the file has free pages to write into).
	for r := range *flagRuns {
		m := max(n/100, 1)
		keys, vals := make([][]byte, m), make([][]byte, m)
		for i := range m {
			keys[i] = d.keys[d.rng.IntN(n)]
			v, _ := d.codec.Encode(newUser(d.rng))
			vals[i] = v
		}
		if err := produce(ctx, e, topic, keys, vals); err != nil {
			return err
		}
		o, err := childRun(e, topic, cacheDir)
		if err != nil {
			return err
		}
		if o.Mode != "delta" {
			return fmt.Errorf("expected a delta restore, got %q", o.Mode)
		}
		add("delta", float64(o.Records)/o.Restore)
		add("delta_s", o.Seconds)
		add("delta_restore_s", o.Restore)
		add("delta_durable_s", o.Seconds+o.Close)
		if r == 0 {
			add("delta_first_s", o.Seconds)
		} else {
			add("delta_later_s", o.Seconds)
		}
	}
	if err := benchOps(e, parts, d, cacheDir, res); err != nil {
		return err
	}
	if parts < 3 { // a group of three needs partitions to split
		return nil
	}
	log.Printf("  partitioned mode")
	return benchPartitioned(e, d, res)
}

func benchOps(e *env, parts int, d *dataset, cacheDir string, res *results) error {
	ctx := context.Background()
	add := func(fig string, v float64) { res.add(e.name, parts, fig, v) }
	open := func(dir string) (*kvstore.Store[User], error) {
		return kvstore.Open[User](ctx, d.topic, kvstore.Brokers(e.brokers...), kvstore.Registry(e.registry),
			kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(dir), kvstore.RestoreMemory(*flagMem))
	}
	s, err := open(cacheDir)
	if err != nil {
		return err
	}
	defer s.Close()
	other, err := open(cacheDir + "-other")
	if err != nil {
		return err
	}
	defer other.Close()
	keys := make([]string, len(d.keys))
	for i, k := range d.keys {
		keys[i] = string(k)
	}
	getLoop := func(g int) (float64, []time.Duration, error) {
		return opLoop(g, 3, func(rng *rand.Rand) error {
			_, ok, err := s.Get(ctx, keys[rng.IntN(len(keys))])
			if err == nil && !ok {
				err = fmt.Errorf("key missing")
			}
			return err
		})
	}
	putLoop := func(g int) (float64, []time.Duration, error) {
		u := newUser(rand.New(rand.NewPCG(1, 2)))
		return opLoop(g, uint64(time.Now().UnixNano()), func(rng *rand.Rand) error {
			_, err := s.Put(ctx, string(randKey(rng)), u)
			return err
		})
	}
	for r := range *flagRuns {
		log.Printf("  Get/Put run %d/%d", r+1, *flagRuns)
		for _, g := range []int{1, 2} {
			rate, ds, err := getLoop(g)
			if err != nil {
				return fmt.Errorf("get: %w", err)
			}
			add(fmt.Sprintf("get%d", g), rate)
			add(fmt.Sprintf("get%d_p50", g), pct(ds, 50))
			add(fmt.Sprintf("get%d_p99", g), pct(ds, 99))
		}
		rate, ds, err := putLoop(1)
		if err != nil {
			return fmt.Errorf("put: %w", err)
		}
		add("put1", rate)
		add("put1_p50", pct(ds, 50))
		add("put1_p99", pct(ds, 99))
		rate, _, err = putLoop(64)
		if err != nil {
			return fmt.Errorf("put: %w", err)
		}
		add("put64", rate)
		if rate, err = putAsyncLoop(ctx, s); err != nil {
			return fmt.Errorf("put async: %w", err)
		}
		add("putasync", rate)
		// Put -> visible in the other store.
		rng := rand.New(rand.NewPCG(uint64(r), 11))
		var vis []time.Duration
		for i := 0; i < 200; i++ {
			key, u := string(randKey(rng)), newUser(rng)
			t := time.Now()
			if _, err := s.Put(ctx, key, u); err != nil {
				return err
			}
			for {
				got, ok, err := other.Get(ctx, key)
				if err != nil {
					return err
				}
				if ok && got.LastName == u.LastName {
					break
				}
				if time.Since(t) > 30*time.Second {
					return fmt.Errorf("put not visible in the other store after 30s")
				}
				time.Sleep(50 * time.Microsecond)
			}
			vis = append(vis, time.Since(t))
		}
		add("vis_p50", pct(vis, 50)/1e3)
		add("vis_p99", pct(vis, 99)/1e3)
		if err := benchReads(ctx, s, other, rng, add); err != nil {
			return err
		}
	}
	return nil
}

// benchReads times a read through other of a key s has just written, three
// ways: a plain Get (it may miss the write), WaitFor of the write's
// Position then Get (read-your-writes), and Sync of the key then Get (a
// consistent read, no token). The write itself is not timed.
func benchReads(ctx context.Context, s, other *kvstore.Store[User], rng *rand.Rand, add func(string, float64)) error {
	var plain, token, consistent []time.Duration
	for i := 0; i < 200; i++ {
		for _, way := range []*[]time.Duration{&plain, &token, &consistent} {
			key, u := string(randKey(rng)), newUser(rng)
			pos, err := s.Put(ctx, key, u)
			if err != nil {
				return err
			}
			t := time.Now()
			switch way {
			case &token:
				err = other.WaitFor(ctx, pos)
			case &consistent:
				_, err = other.Sync(ctx, key)
			}
			if err != nil {
				return err
			}
			got, ok, err := other.Get(ctx, key)
			*way = append(*way, time.Since(t))
			if err != nil {
				return err
			}
			if way != &plain && (!ok || got.LastName != u.LastName) {
				return fmt.Errorf("read after WaitFor/Sync missed the write of %q", key)
			}
		}
	}
	add("read_plain_p50", pct(plain, 50))
	add("read_plain_p99", pct(plain, 99))
	add("read_token_p50", pct(token, 50))
	add("read_token_p99", pct(token, 99))
	add("read_sync_p50", pct(consistent, 50))
	add("read_sync_p99", pct(consistent, 99))
	return nil
}

// opLoop runs op on g goroutines for -op-time and returns the ops/s and
// each op's latency (up to 1<<20 samples per goroutine); the first error
// ends it.
func opLoop(g int, seed uint64, op func(rng *rand.Rand) error) (float64, []time.Duration, error) {
	var (
		wg    sync.WaitGroup
		total atomic.Int64
		mu    sync.Mutex
		all   []time.Duration
		ferr  atomic.Pointer[error]
	)
	start := time.Now()
	deadline := start.Add(*flagOpDur)
	for w := range g {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), seed))
			ds := make([]time.Duration, 0, 1<<20)
			for t := time.Now(); t.Before(deadline); {
				if err := op(rng); err != nil {
					ferr.Store(&err)
					return
				}
				now := time.Now()
				if len(ds) < cap(ds) {
					ds = append(ds, now.Sub(t))
				}
				total.Add(1)
				t = now
			}
			mu.Lock()
			all = append(all, ds...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if p := ferr.Load(); p != nil {
		return 0, nil, *p
	}
	return float64(total.Load()) / time.Since(start).Seconds(), all, nil
}

// putAsyncLoop measures Puts/s through PutAsync from one goroutine with at
// most 4096 writes in flight.
func putAsyncLoop(ctx context.Context, s *kvstore.Store[User]) (float64, error) {
	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	u := newUser(rng)
	sem := make(chan struct{}, 4096)
	var ferr atomic.Pointer[error]
	var n int64
	start := time.Now()
	for time.Since(start) < *flagOpDur && ferr.Load() == nil {
		sem <- struct{}{}
		n++
		s.PutAsync(ctx, string(randKey(rng)), u, func(_ kvstore.Position, err error) {
			if err != nil {
				ferr.Store(&err)
			}
			<-sem
		})
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	if p := ferr.Load(); p != nil {
		return 0, *p
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// benchVersions restores a topic with many versions per key before and after
// the broker compacts it (kfake's Compact; in-process broker only).
func benchVersions(e *env, res *results) error {
	ctx := context.Background()
	n, v := *flagN, max(*flagVersions, 1)
	topic := "bench-versions-" + e.suffix
	log.Printf("%s: versions topic: %d records, %d versions per key", e.name, n, v)
	d, err := createTopic(ctx, e, topic, 1)
	if err != nil {
		return err
	}
	nk := max(n/v, 1)
	keys := make([][]byte, nk)
	for i := range keys {
		keys[i] = randKey(d.rng)
	}
	ks, vs := make([][]byte, 0, n), make([][]byte, 0, n)
	for i := range n {
		val, err := d.codec.Encode(newUser(d.rng))
		if err != nil {
			return err
		}
		ks, vs = append(ks, keys[i%nk]), append(vs, val)
	}
	if err := produce(ctx, e, topic, ks, vs); err != nil {
		return err
	}
	dir := filepath.Join(e.tmp, topic)
	for _, phase := range []string{"before", "after"} {
		if phase == "after" {
			e.cluster.Kafka().Compact()
		}
		for range *flagRuns {
			os.RemoveAll(dir)
			o, err := childRun(e, topic, dir)
			if err != nil {
				return err
			}
			res.add(e.name, 1, "ver_"+phase, float64(o.Records)/o.Seconds)
			res.add(e.name, 1, "ver_"+phase+"_s", o.Seconds)
			res.add(e.name, 1, "ver_"+phase+"_records", float64(o.Records))
			res.add(e.name, 1, "ver_"+phase+"_heap", float64(o.HeapPeak))
		}
	}
	return nil
}
