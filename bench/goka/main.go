// Command goka-path is a restore baseline for the compactkv benchmark.
//
// It rebuilds, without depending on github.com/lovoo/goka (which is not
// available from the Go module proxy), the code path a goka View takes to
// recover a table topic into an empty local cache:
//
//   - sarama config = goka's DefaultConfig() (see gokaDefaultConfig below),
//   - a topic manager client (ClientID "goka-topic-manager") that asks for the
//     oldest offset and the high watermark of every partition
//     (goka PartitionTable.findOffsetToLoad),
//   - ONE plain sarama.Consumer (ClientID "goka", no consumer group, goka's
//     DefaultSaramaConsumerBuilder) and one ConsumePartition per partition,
//     all partitions recovered concurrently (one PartitionTable goroutine
//     each),
//   - one LevelDB per partition at <dir>/<topic>.<partition>, opened with
//     leveldb.OpenFile(path, nil), i.e. default goleveldb options (goka's
//     storage.DefaultBuilder),
//   - per record exactly one db.Put(key, value, nil), or db.Delete(key, nil)
//     for a null value (goka's DefaultUpdate -> storage.Set / storage.Delete),
//     followed by storage.SetOffset(offset),
//   - stop when msg.Offset >= hwm-1 (goka PartitionTable.loadMessages), then
//     MarkRecovered.
//
// Offset bookkeeping (-offset-mode):
//
//	goka       (default) What goka's current storage/leveldb.go
//	           (levelDBStorage, goka v1.1.x line) does: during recovery SetOffset
//	           only stores the offset in an atomic int64; the "__offset" key is
//	           Put by a 30 s ticker and once in MarkRecovered.
//	per-record Put("__offset", strconv(offset)) after every record, as the
//	           older goka storage (storage.go with SetOffset -> Set) did. This
//	           doubles the number of LevelDB writes. (That older storage also
//	           wrapped recovery in a leveldb.Transaction, which is NOT modelled.)
//
// Output: one JSON line on stdout, e.g.
//
//	{"impl":"goka-path","records":N,"seconds":S,"records_per_sec":R,"bytes":B,"peak_rss_bytes":X,...}
//
// "seconds" runs from before the Kafka clients are created until every
// partition has been marked recovered (what goka's View.Recovered() reports);
// closing the databases, -verify counting and clean-up are not timed.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/syndtr/goleveldb/leveldb"
)

const (
	offsetKey = "__offset" // goka storage.offsetKey
	// goka storage/leveldb.go recoveryCommitOffsetInterval
	recoveryCommitOffsetInterval = 30 * time.Second
	// goka options.go defaultClientID; builders.go topic manager client id
	defaultClientID  = "goka"
	topicMgrClientID = "goka-topic-manager"
)

// gokaDefaultConfig reproduces goka's DefaultConfig() (config.go in
// lovoo/goka, IBM/sarama era, v1.1.x):
//
//	config := sarama.NewConfig()
//	config.Version = sarama.V2_0_0_0
//	config.Consumer.Return.Errors = true
//	config.Consumer.MaxProcessingTime = 1 * time.Second
//	config.Consumer.Offsets.Initial = sarama.OffsetNewest // tables ignore it: they start at OffsetOldest
//	config.Consumer.Group.Rebalance.Strategy = CopartitioningStrategy // group only; not used by a View
//	config.Producer.RequiredAcks = sarama.WaitForLocal
//	config.Producer.Compression = sarama.CompressionSnappy
//	config.Producer.Flush.Frequency = time.Second
//	config.Producer.Flush.Bytes = 1024 * 1024
//	config.Producer.Return.Successes = true
//	config.Producer.Return.Errors = true
//	config.Producer.Retry.Max = 20                      // newest master only
//	config.Producer.Retry.Backoff = 500 * time.Millisecond // newest master only
//
// Everything else is sarama's NewConfig() default, notably
// ChannelBufferSize=256, Consumer.Fetch.Min=1, Consumer.Fetch.Default=1 MiB,
// Consumer.MaxWaitTime=500ms, Metadata.Full=true. Producer settings do not
// affect a restore; they are kept only so the config is goka's as a whole.
func gokaDefaultConfig() *sarama.Config {
	config := sarama.NewConfig()
	config.Version = sarama.V2_0_0_0

	config.Consumer.Return.Errors = true
	config.Consumer.MaxProcessingTime = 1 * time.Second
	config.Consumer.Offsets.Initial = sarama.OffsetNewest

	config.Producer.RequiredAcks = sarama.WaitForLocal
	config.Producer.Compression = sarama.CompressionSnappy
	config.Producer.Flush.Frequency = time.Second
	config.Producer.Flush.Bytes = 1024 * 1024
	config.Producer.Return.Successes = true
	config.Producer.Return.Errors = true
	config.Producer.Retry.Max = 20
	config.Producer.Retry.Backoff = 500 * time.Millisecond
	return config
}

// storage mirrors goka's levelDBStorage as far as recovery is concerned.
type storage struct {
	db        *leveldb.DB
	offset    int64 // atomic, like levelDBStorage.offset
	perRecord bool
	recovered chan struct{}
	closeCh   chan struct{}
}

func openStorage(path string, perRecord bool) (*storage, error) {
	db, err := leveldb.OpenFile(path, nil) // goka storage.DefaultBuilder: default options
	if err != nil {
		return nil, fmt.Errorf("error opening leveldb: %v", err)
	}
	s := &storage{db: db, perRecord: perRecord, recovered: make(chan struct{}), closeCh: make(chan struct{})}
	// levelDBStorage.Open: periodic offset flush while recovering.
	go func() {
		t := time.NewTicker(recoveryCommitOffsetInterval)
		defer t.Stop()
		for {
			select {
			case <-s.closeCh:
				return
			case <-s.recovered:
				return
			case <-t.C:
				if off := atomic.LoadInt64(&s.offset); off != 0 {
					_ = s.putOffset(off)
				}
			}
		}
	}()
	return s, nil
}

func (s *storage) set(key string, value []byte) error {
	if err := s.db.Put([]byte(key), value, nil); err != nil {
		return fmt.Errorf("error setting to leveldb (key %s): %v", key, err)
	}
	return nil
}

func (s *storage) delete(key string) error {
	if err := s.db.Delete([]byte(key), nil); err != nil {
		return fmt.Errorf("error deleting from leveldb (key %s): %v", key, err)
	}
	return nil
}

func (s *storage) putOffset(off int64) error {
	return s.set(offsetKey, []byte(strconv.FormatInt(off, 10)))
}

func (s *storage) getOffset(def int64) (int64, error) {
	v, err := s.db.Get([]byte(offsetKey), nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return def, nil
	} else if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(v), 10, 64)
}

func (s *storage) setOffset(off int64) error {
	atomic.StoreInt64(&s.offset, off)
	if s.perRecord {
		return s.putOffset(off)
	}
	return nil
}

func (s *storage) markRecovered() error {
	if off := atomic.LoadInt64(&s.offset); off != 0 {
		if err := s.putOffset(off); err != nil {
			return err
		}
	}
	close(s.recovered)
	return nil
}

func (s *storage) close() error {
	close(s.closeCh)
	return s.db.Close()
}

// countKeys counts live keys, skipping goka's offset key like goka's iterator.
func (s *storage) countKeys() (int64, error) {
	it := s.db.NewIterator(nil, nil)
	defer it.Release()
	var n int64
	for it.Next() {
		if string(it.Key()) == offsetKey {
			continue
		}
		n++
	}
	return n, it.Error()
}

type partResult struct {
	records   int64
	bytes     int64
	tombs     int64
	idleStops int64
	err       error
}

const offsetNotStored int64 = -3 // goka partition_table.go

// recoverPartition follows goka's PartitionTable.load(ctx, stopAfterCatchup=true).
func recoverPartition(client sarama.Client, consumer sarama.Consumer, st *storage, topic string, p int32, idle time.Duration) (res partResult) {
	stored, err := st.getOffset(offsetNotStored)
	if err != nil {
		res.err = fmt.Errorf("error reading local offset: %v", err)
		return
	}
	oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		res.err = fmt.Errorf("oldest offset %s/%d: %v", topic, p, err)
		return
	}
	hwm, err := client.GetOffset(topic, p, sarama.OffsetNewest)
	if err != nil {
		res.err = fmt.Errorf("newest offset %s/%d: %v", topic, p, err)
		return
	}
	start := oldest
	if stored != offsetNotStored {
		start = stored + 1
	}
	if start < oldest {
		start = oldest
	}
	// Empty partition (hwm==0), or everything below hwm already gone: nothing to load.
	if hwm <= 0 || start >= hwm {
		res.err = st.markRecovered()
		return
	}

	pc, err := consumer.ConsumePartition(topic, p, start)
	if err != nil {
		res.err = fmt.Errorf("consume %s/%d from %d: %v", topic, p, start, err)
		return
	}
	defer func() { // goka: AsyncClose + drainConsumer (both channels)
		pc.AsyncClose()
		done := make(chan struct{})
		go func() {
			for range pc.Errors() {
			}
			close(done)
		}()
		for range pc.Messages() {
		}
		<-done
	}()

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	msgs, errs := pc.Messages(), pc.Errors()
loop:
	for {
		select {
		case cerr, ok := <-errs:
			if !ok {
				break loop
			}
			if cerr != nil {
				res.err = cerr
				return
			}
		case msg, ok := <-msgs:
			if !ok {
				break loop
			}
			last = time.Now()
			key := string(msg.Key) // goka passes keys as strings
			if msg.Value == nil {
				err = st.delete(key)
				res.tombs++
			} else {
				err = st.set(key, msg.Value)
			}
			if err == nil {
				err = st.setOffset(msg.Offset)
			}
			if err != nil {
				res.err = fmt.Errorf("load: error updating storage: %v", err)
				return
			}
			res.records++
			res.bytes += int64(len(msg.Key) + len(msg.Value))
			if msg.Offset >= hwm-1 {
				break loop
			}
		case <-tick.C:
			// Guard goka itself does not have: if the offsets just below the
			// start-time hwm hold no data record (e.g. transaction markers),
			// goka would wait forever. Stop once the broker has reported a hwm
			// >= our target and nothing has arrived for -idle-timeout.
			if idle > 0 && time.Since(last) > idle && pc.HighWaterMarkOffset() >= hwm {
				res.idleStops++
				break loop
			}
		}
	}
	res.err = st.markRecovered()
	return
}

func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmHWM:") {
			fs := strings.Fields(line)
			if len(fs) >= 2 {
				kb, _ := strconv.ParseInt(fs[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return -1
}

func dirSize(path string) int64 {
	var n int64
	_ = filepath.Walk(path, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "goka-path: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap brokers")
	topic := flag.String("topic", "", "table topic to restore")
	dir := flag.String("dir", "", "storage directory (goka uses <dir>/<topic>.<partition>); default: a temp dir")
	verify := flag.Bool("verify", false, "count live keys in LevelDB after the restore (untimed) and report \"keys\"")
	offsetMode := flag.String("offset-mode", "goka", "goka | per-record (see package doc)")
	idle := flag.Duration("idle-timeout", 3*time.Second, "stop a partition after this long without messages once the broker hwm reached the target (0 = never, like goka)")
	keep := flag.Bool("keep", false, "keep the LevelDB directories after the run")
	flag.Parse()
	if *topic == "" {
		fail("-topic is required")
	}
	if *offsetMode != "goka" && *offsetMode != "per-record" {
		fail("-offset-mode must be goka or per-record")
	}
	base := *dir
	tmpBase := false
	if base == "" {
		d, err := os.MkdirTemp("", "goka-path-")
		if err != nil {
			fail("%v", err)
		}
		base, tmpBase = d, true
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		fail("%v", err)
	}
	// Restore into an EMPTY cache: drop leftovers of this topic's partitions.
	old, _ := filepath.Glob(filepath.Join(base, *topic+".*"))
	for _, o := range old {
		_ = os.RemoveAll(o)
	}

	cfg := gokaDefaultConfig()
	brokerList := strings.Split(*brokers, ",")

	t0 := time.Now()
	tmCfg := *cfg
	tmCfg.ClientID = topicMgrClientID
	client, err := sarama.NewClient(brokerList, &tmCfg)
	if err != nil {
		fail("topic manager client: %v", err)
	}
	consCfg := *cfg
	consCfg.ClientID = defaultClientID
	consumer, err := sarama.NewConsumer(brokerList, &consCfg)
	if err != nil {
		fail("consumer: %v", err)
	}
	parts, err := client.Partitions(*topic)
	if err != nil {
		fail("partitions of %s: %v", *topic, err)
	}

	stores := make([]*storage, len(parts))
	results := make([]partResult, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		st, err := openStorage(filepath.Join(base, fmt.Sprintf("%s.%d", *topic, p)), *offsetMode == "per-record")
		if err != nil {
			fail("%v", err)
		}
		stores[i] = st
		wg.Add(1)
		go func(i int, p int32) {
			defer wg.Done()
			results[i] = recoverPartition(client, consumer, stores[i], *topic, p, *idle)
		}(i, p)
	}
	wg.Wait()
	elapsed := time.Since(t0).Seconds()

	var records, bytes, tombs, idleStops int64
	for i, r := range results {
		if r.err != nil {
			fail("partition %d: %v", parts[i], r.err)
		}
		records += r.records
		bytes += r.bytes
		tombs += r.tombs
		idleStops += r.idleStops
	}
	_ = consumer.Close()
	_ = client.Close()

	var keys int64 = -1
	if *verify {
		keys = 0
		for _, st := range stores {
			n, err := st.countKeys()
			if err != nil {
				fail("verify: %v", err)
			}
			keys += n
		}
	}
	for _, st := range stores {
		if err := st.close(); err != nil {
			fail("close: %v", err)
		}
	}
	var disk int64
	for _, p := range parts {
		disk += dirSize(filepath.Join(base, fmt.Sprintf("%s.%d", *topic, p)))
	}
	if !*keep {
		for _, p := range parts {
			_ = os.RemoveAll(filepath.Join(base, fmt.Sprintf("%s.%d", *topic, p)))
		}
		if tmpBase {
			_ = os.RemoveAll(base)
		}
	}

	rate := 0.0
	if elapsed > 0 {
		rate = float64(records) / elapsed
	}
	out := map[string]any{
		"impl":            "goka-path",
		"records":         records,
		"seconds":         elapsed,
		"records_per_sec": rate,
		"bytes":           bytes,
		"peak_rss_bytes":  peakRSS(),
		"partitions":      len(parts),
		"tombstones":      tombs,
		"disk_bytes":      disk,
		"offset_mode":     *offsetMode,
		"idle_stops":      idleStops,
		"settings": map[string]any{
			"sarama_config":  "goka DefaultConfig (Version=V2_0_0_0, Consumer.Return.Errors=true, MaxProcessingTime=1s, ChannelBufferSize=256)",
			"leveldb":        "leveldb.OpenFile(path, nil) per partition",
			"writes":         "one Put/Delete per record",
			"offset_key_put": map[string]string{"goka": "on MarkRecovered (+every 30s)", "per-record": "after every record"}[*offsetMode],
		},
	}
	if keys >= 0 {
		out["keys"] = keys
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
