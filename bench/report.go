package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

type row struct {
	label, fig, unit string
}

var rows = []row{
	{"Full restore, ours (records/s)", "full", "rate"},
	{"Full restore, ours (MB/s of key+value bytes)", "full_mb", "mb"},
	{"Full restore, ours (seconds, Open wall clock)", "full_s", "s"},
	{"Full restore, ours: peak Go heap (heap objects)", "full_heap", "bytes"},
	{"Full restore, ours: peak RSS (VmHWM of the restoring process)", "full_rss", "bytes"},
	{"Baseline 1: raw franz-go consume, in a process of its own as ours (records/s)", "raw", "rate"},
	{"Baseline 1 in the bench's own process, its heap grown by producing (records/s)", "raw_warm", "rate"},
	{"Baseline 2: bbolt alone, sorted, 200k-record txs (records/s)", "bolt", "rate"},
	{"Baseline 3: goka's path (records/s)", "goka", "rate"},
	{"Baseline 3: goka's path: peak RSS", "goka_rss", "bytes"},
	{"Baseline 4: Kafka Streams GlobalKTable (records/s)", "streams", "rate"},
	{"Baseline 4: Kafka Streams: peak RSS", "streams_rss", "bytes"},
	{"Delta restore after 1% of keys changed (records/s, restore phase)", "delta", "rate"},
	{"Delta restore: restore phase (seconds)", "delta_restore_s", "s"},
	{"Delta restore: Open wall clock (seconds)", "delta_s", "s"},
	{"Delta restore: Open and then Close (which waits, up to 2 s, until the file holds the delta) (seconds)", "delta_durable_s", "s"},
	{"Delta restore: the first after a full restore, Open wall clock (seconds)", "delta_first_s", "s"},
	{"Delta restore: the later ones (on a file earlier deltas wrote), Open wall clock (seconds)", "delta_later_s", "s"},
	{"Get + decode, 1 goroutine (Gets/s)", "get1", "rate"},
	{"Get + decode, 1 goroutine: p50", "get1_p50", "us"},
	{"Get + decode, 1 goroutine: p99", "get1_p99", "us"},
	{"Get + decode, 2 goroutines (Gets/s)", "get2", "rate"},
	{"Get + decode, 2 goroutines: p50", "get2_p50", "us"},
	{"Get + decode, 2 goroutines: p99", "get2_p99", "us"},
	{"Put, sync, 1 caller (Puts/s)", "put1", "rate"},
	{"Put, sync, 1 caller: p50", "put1_p50", "us"},
	{"Put, sync, 1 caller: p99", "put1_p99", "us"},
	{"Put, 64 concurrent callers (Puts/s)", "put64", "rate"},
	{"PutAsync, one caller, 4096 in flight (Puts/s)", "putasync", "rate"},
	{"Put -> visible in another store's Get: p50", "vis_p50", "ms"},
	{"Put -> visible in another store's Get: p99", "vis_p99", "ms"},
	{"Partitioned mode: whole-topic restore in the members' process (seconds, Open wall clock)", "part_whole_s", "s"},
	{"Partitioned mode: one member joining two, until it serves its share (seconds)", "part_member_s", "s"},
	{"Partitioned mode: that member's restore alone, first partition given to last served (seconds)", "part_restore_s", "s"},
	{"Partitioned mode: crash of one of three until every partition is served, 0 standbys (seconds; session 6s)", "failover0_s", "s"},
	{"Partitioned mode: the same, 1 standby (seconds)", "failover1_s", "s"},
	{"Read right after another store's Put: plain Get: p50", "read_plain_p50", "us"},
	{"Read right after another store's Put: plain Get: p99", "read_plain_p99", "us"},
	{"Read right after another store's Put: token read (WaitFor + Get): p50", "read_token_p50", "us"},
	{"Read right after another store's Put: token read (WaitFor + Get): p99", "read_token_p99", "us"},
	{"Read right after another store's Put: consistent read (Sync + Get): p50", "read_sync_p50", "us"},
	{"Read right after another store's Put: consistent read (Sync + Get): p99", "read_sync_p99", "us"},
}

var ratios = []struct{ label, num, den string }{
	{"ours / raw consume (baseline 1)", "full", "raw"},
	{"ours / raw consume in the bench's process", "full", "raw_warm"},
	{"ours / bbolt alone (baseline 2)", "full", "bolt"},
	{"ours / goka's path (baseline 3)", "full", "goka"},
	{"ours / Kafka Streams (baseline 4)", "full", "streams"},
	{"delta restore time / full restore time (Open wall clock)", "delta_s", "full_s"},
	{"later delta restore time / full restore time (Open wall clock)", "delta_later_s", "full_s"},
	{"partitioned: one member of three, joining / whole-topic restore (time)", "part_member_s", "part_whole_s"},
	{"partitioned: one member of three, its restore alone / whole-topic restore (time)", "part_restore_s", "part_whole_s"},
}

func fmtVal(v float64, unit string) string {
	switch unit {
	case "rate":
		switch {
		case v >= 1e6:
			return fmt.Sprintf("%.2fM", v/1e6)
		case v >= 1e3:
			return fmt.Sprintf("%.1fk", v/1e3)
		}
		return fmt.Sprintf("%.0f", v)
	case "mb":
		return fmt.Sprintf("%.1f", v)
	case "s":
		return fmt.Sprintf("%.3f s", v)
	case "bytes":
		return fmt.Sprintf("%.0f MiB", v/(1<<20))
	case "us":
		if v >= 1000 {
			return fmt.Sprintf("%.2f ms", v/1e3)
		}
		return fmt.Sprintf("%.1f µs", v)
	case "ms":
		return fmt.Sprintf("%.2f ms", v)
	}
	return fmt.Sprint(v)
}

func cell(s series, unit string) string {
	med, lo, hi, ok := s.stats()
	if !ok {
		return "—"
	}
	if len(s) == 1 {
		return fmtVal(med, unit)
	}
	return fmt.Sprintf("%s (%s, %s)", fmtVal(med, unit), fmtVal(lo, unit), fmtVal(hi, unit))
}

func median(s series) (float64, bool) {
	m, _, _, ok := s.stats()
	return m, ok
}

func machine() []string {
	var out []string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				out = append(out, "CPU: "+strings.TrimSpace(strings.SplitN(l, ":", 2)[1]))
				break
			}
		}
	}
	out = append(out, fmt.Sprintf("cores (GOMAXPROCS): %d", runtime.GOMAXPROCS(0)))
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		l := strings.SplitN(string(b), "\n", 2)[0]
		out = append(out, "memory: "+strings.Join(strings.Fields(l)[1:], " "))
	}
	if b, err := exec.Command("uname", "-sr").Output(); err == nil {
		out = append(out, "kernel: "+strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		out = append(out, "load average at the end of the run: "+strings.Join(strings.Fields(string(b))[:3], " "))
	}
	return out
}

func writeReport(res *results, envs []*env, parts, lparts []int, took time.Duration) error {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("# compactkv benchmarks\n\n")
	w("Generated by:\n\n    go run ./bench %s\n\n", strings.Join(os.Args[1:], " "))
	w("on %s in %s. Every figure is the median of %d run(s), with (min, max) when there are several; ratios are ratios of medians measured in the same run.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), took.Round(time.Second), *flagRuns)
	w("## Machine\n\n")
	for _, l := range machine() {
		w("- %s\n", l)
	}
	w("\n## Versions\n\n- %s\n", runtime.Version())
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if strings.Contains(d.Path, "franz-go") || strings.Contains(d.Path, "bbolt") || strings.Contains(d.Path, "hamba/avro") {
				w("- %s %s\n", d.Path, d.Version)
			}
		}
	}
	for k, v := range versions {
		where := "bench/goka, goka's path"
		if k == "Kafka Streams" {
			where = "bench/streams"
		}
		w("- %s %s (%s)\n", k, v, where)
	}
	if *flagReal != "" {
		kv := os.Getenv("COMPACTKV_KAFKA_VERSION")
		if kv == "" {
			kv = "4.1.1 (scripts/kafka.sh default)"
		}
		w("- real broker: Apache Kafka %s, single node KRaft (scripts/kafka.sh)\n", kv)
	}
	w("\n## Settings\n\n")
	w("- N = %d records per topic (and %d in the table-growth section): random 16-byte keys, Avro User values (testdata/user-v2.avsc, Confluent framing, %s bytes on average)\n", *flagN, *flagLarge, avgVal(res))
	w("- partitions: %s; records are partitioned with murmur2 (the store's default); producer: franz-go, linger 5 ms, batches up to 1 MiB, snappy compression (franz-go's default)\n", *flagParts)
	w("- runs: %d; Get/Put measurements run %v each; Put->visible: 200 samples per run\n", *flagRuns, *flagOpDur)
	w("- ours: kvstore.Open on an empty cache directory in a subprocess of the bench binary (so its VmHWM is its own); RestoreMemory = %d MiB; records/s = records read / Open wall clock (connect, topic check, schema registration, restore, install)\n", *flagMem>>20)
	w("- peak Go heap: /memory/classes/heap/objects:bytes (HeapAlloc) sampled every 1 ms during Open\n")
	w("- delta: after the full runs, 1%% of N records (random existing keys, new values) produced per run, then Open on the cache the previous restore left; records/s = records / RestoreStats.Duration\n")
	w("- baseline 1: franz-go client, FetchMaxBytes 64 MiB, FetchMaxPartitionBytes 16 MiB, consume from the start until N records, records dropped, timed from the client's creation; run in a subprocess of the bench binary, as ours is (the figure the targets use), and also in the bench's own process, whose heap producing the topic has already grown (the tables show both)\n")
	w("- baseline 2: the same keys and values, presorted (sort not timed), bbolt Put in transactions of 200,000 into one bucket, FillPercent 1.0, NoSync, NoFreelistSync, one Sync at the end\n")
	w("- baseline 3: bench/goka (goka's default sarama config, one goleveldb per partition, one Put per record), run as a subprocess; its own records/s\n")
	w("- baseline 4: bench/streams (`java -Xmx1g -jar target/streams-bench.jar`), GlobalKTable with the default RocksDB store; start to queryable; real broker only\n")
	w("- Get: random existing keys, value decoded into the Go struct; Put: new random keys (sync: acks=all, waits for the ack); the Put->visible figure writes through one store and polls a second store's Get every 50 µs; the read-after-Put figures time, in a second store, a read of a key the first has just written (write not timed), 200 samples per run each: a plain Get (which may miss it), WaitFor of the write's Position then Get, and Sync of the key then Get\n")
	for _, e := range envs {
		if *flagOnlyLarge {
			break // only the table-growth section ran
		}
		w("\n## %s\n\n", e.name)
		w("| figure |")
		for _, p := range parts {
			w(" %d partition(s) |", p)
		}
		w("\n|---|")
		for range parts {
			w("---|")
		}
		w("\n")
		for _, r := range rows {
			if !e.real && (r.fig == "streams" || r.fig == "streams_rss") {
				w("| %s | not run on the in-process broker |%s\n", r.label, strings.Repeat(" |", len(parts)-1))
				continue
			}
			w("| %s |", r.label)
			for _, p := range parts {
				w(" %s |", cell(res.get(e.name, p, r.fig), r.unit))
			}
			w("\n")
		}
		for _, r := range ratios {
			w("| **ratio: %s** |", r.label)
			for _, p := range parts {
				num, ok1 := median(res.get(e.name, p, r.num))
				den, ok2 := median(res.get(e.name, p, r.den))
				if ok1 && ok2 && den > 0 {
					w(" **%.2fx** |", num/den)
				} else {
					w(" — |")
				}
			}
			w("\n")
		}
		if !e.real {
			w("\nMany versions per key (1 partition, %d versions of each of N/%d keys; kfake Compact() between the two):\n\n", *flagVersions, *flagVersions)
			w("| figure | before compaction | after compaction |\n|---|---|---|\n")
			for _, x := range []struct{ l, f, u string }{{"records read", "records", "n"}, {"records/s", "", "rate"}, {"seconds (Open wall clock)", "s", "s"}, {"peak Go heap", "heap", "bytes"}} {
				w("| %s |", x.l)
				for _, ph := range []string{"before", "after"} {
					f := "ver_" + ph
					if x.f != "" {
						f += "_" + x.f
					}
					w(" %s |", cell(res.get(e.name, 1, f), x.u))
				}
				w("\n")
			}
		}
	}
	if *flagReal == "" {
		w("\n## Real broker\n\nNot run: no -real-brokers flag and no COMPACTKV_BROKERS. Start one with `bash scripts/kafka.sh up` and pass the address it prints; Kafka Streams (baseline 4) runs only there.\n")
	}
	if *flagLarge > 0 || *flagOnlyLarge {
		w("%s", largeTable(res, envs, lparts))
	}
	w("\n## Targets\n\n")
	if *flagQuick || *flagN < 1_000_000 {
		w("N = %d here: fixed costs (process start, round trips, file set-up) weigh far more than at the N = 1,000,000 the targets were set for, so what this table says of them means little.\n\n", *flagN)
	}
	w("%s", targets(res, envs, parts, lparts))
	w("%s", unmetNotes)
	w("%s", forwardNote)
	return os.WriteFile(*flagOut, []byte(b.String()), 0o644)
}

// unmetNotes says what stands in the way of the targets this design misses.
const unmetNotes = `
### How the restore target is judged (since stop 19)

The bench redefined baseline 1 in stop 19. Until then it was timed only in the bench's
own process, whose heap producing the topic had already grown, while the restore was
always timed in a process of its own (for its own VmHWM). It is now timed both ways, and
the target "full restore >= 0.4 of a raw consume" judges against the raw consume in a
process of its own, both timed from their client's creation. Against the raw consume in
the bench's process (the "in the bench's process" rows), the only figure before stop 19,
the restore is still short or on the line: 0.36-0.40x against Kafka in this file. By hand
against Kafka (3 runs at 1M and at 4M, 1 partition), the same consume read 1.4-1.8x faster
in the bench's process than in a fresh one. What makes the difference is not pinned down:
not the collector (with GOGC=800 the fresh consume was no faster, 2 runs at 1M and at 4M);
memory a fresh process must first get from the kernel is a guess. The issue's own raw-consume
figure, 4.2-4.5M records/s, is nearer the fresh figures here (3.2-4.2M) than the warm
ones (5.1-5.9M), and its gloss of the target, "about 1.6M records/s", is met: the restore
reads Kafka at 2.0-2.3M records/s. The asymmetries left favour the baseline: it reads with
64 MiB fetches (the restore with 2 MiB ones, for a flat heap), and its timer starts after
it has listed the end offsets, while the restore's includes connecting, checking the
topic, the schema and the offsets.

Where a 1M-record restore's ~0.45 s goes against Kafka on 1 partition, by hand with
timestamps at each step: ~20 ms until the first fetch returns; ~0.31 s reading (kgo's
1 MiB fetches, the screen, the sort; spills sort and write on a goroutine of their own
since stop 19, which took the reading phase at 4M from 1.30-1.34 s to 0.99-1.03 s);
~30 ms for the last spill and the sort of what is still in memory; ~90 ms merging the runs
into pages; ~25 ms for the file's self-check; ~1 ms for the meta transaction and the
rename. Mapping the runs (mmap) for the merge was tried and was no faster (4M, merge alone,
2 alternated rounds: 364/366 ms before, 378/407 ms after). Fetches of 16 and 64 MiB made
the heap grow with the table and were no faster.

### What stands in the way

- **Delta (1% changed) <= 5% of the full time (issue 6).** Met at 10% (issue 14's target)
  since a delta Open serves what it read from memory and the follower writes it into the
  file just after (the "Open and then Close" row: about 0.2 s until the file holds it);
  what is left of the Open (35-55 ms) is the file's page check (overlapped with the round
  trips to the broker and the registry), the first fetch, and the round trips.
- **150k Puts/s (issue 6).** Against Kafka PutAsync meets it; in-process, 64 synchronous
  callers hover around the line (139.5k and 167.7k in stop 19's two regenerations): they
  are bounded by the produce round trip (64 records per in-flight request); PutAsync, many
  writes in flight from one caller, is the way to load data.
- **Sync Put p50 <= 100 µs, against Kafka.** Issue 6 set it for the in-process broker;
  against Kafka the round trip of a produce with acks=all is the floor (it varied
  between 120 and 750 µs across this file's regenerations, on the same code path).
`

// forwardNote is the report's closing section: BenchmarkForwardedGet's
// figures, measured by hand with go test, not by this generator; kept
// here so that a regenerated BENCHMARKS.md keeps them.
const forwardNote = `
## Partitioned mode: the added latency of a forwarded read (hand-run)

Not produced by this generator: measured by hand, at commit 5482554, with

    go test -run '^$' -bench Forward -benchtime 2000x -count 3 ./cmd/profilesvc/...

(BenchmarkForwardedGet in cmd/profilesvc/internal/httpapi/routing_bench_test.go) on an
Intel Xeon, 2 cores (GOMAXPROCS 2), shared, load average about 3 during the run;
go1.26.8. Two profilesvc APIs, each an httptest server on loopback, over two real
stores in partitioned mode (kvstore.Group, Advertise) on the in-process broker, one
partition each. One client with keep-alive reads GET /profiles/{id} through instance A,
alternating a key A owns (local) and a key B owns (forwarded: A sends it to B over
loopback HTTP and relays the answer), so both ways take the same client path at the same
time and the difference is the hop. Latency: from sending the request to reading the
whole answer; 2,000 reads of each way per run. Medians of the 3 runs, (min, max), all
from one invocation:

| figure | local | forwarded | forwarded / local |
|---|---|---|---|
| p50 | 26.7 µs (26.0, 29.7) | 67.8 µs (61.3, 71.8) | 2.42x (2.36, 2.54) |
| p99 | 285 µs (271, 371) | 1,434 µs (953, 1,453) | 3.92x (3.52, 5.03) |

The hop adds about 41 µs at the median (35 to 42 µs by run): a second HTTP round trip
on loopback, A's outgoing request and the relay of B's answer. The tail is the shared
2-core machine (three HTTP servers, the broker and two stores' followers on two cores)
more than the hop. The generator writes this section as it stands (forwardNote in
bench/report.go) and does not remeasure it: rerun the command above to refresh it.
`

var avgValBytes float64

func avgVal(*results) string { return fmt.Sprintf("%.0f", avgValBytes) }

// targets is the report's table of targets, each judged from the medians of
// this run on every broker, with the rows of this report that measured it.
func targets(res *results, envs []*env, parts []int, lparts []int) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	has := func(ps []int, p int) bool { return slices.Contains(ps, p) }
	m := func(env string, p int, f string) (float64, bool) { return median(res.get(env, p, f)) }
	type judge func(env string) (got string, met, ok bool)
	ratioAtMost := func(p int, num, den string, limit float64, pct bool) judge {
		return func(env string) (string, bool, bool) {
			a, ok1 := m(env, p, num)
			c, ok2 := m(env, p, den)
			if !ok1 || !ok2 || c == 0 {
				return "", false, false
			}
			if pct {
				return fmt.Sprintf("%.1f%%", 100*a/c), a/c <= limit, true
			}
			return fmt.Sprintf("%.2fx", a/c), a/c <= limit, true
		}
	}
	ratioAtLeast := func(p int, num, den string, limit float64) judge {
		return func(env string) (string, bool, bool) {
			a, ok1 := m(env, p, num)
			c, ok2 := m(env, p, den)
			if !ok1 || !ok2 || c == 0 {
				return "", false, false
			}
			return fmt.Sprintf("%.2fx", a/c), a/c >= limit, true
		}
	}
	value := func(p int, f, unit string, ok func(v float64) bool) judge {
		return func(env string) (string, bool, bool) {
			v, have := m(env, p, f)
			if !have {
				return "", false, false
			}
			return fmtVal(v, unit), ok(v), true
		}
	}
	w("Judged from this run's medians on each broker; \"rows\" names the rows above that measured it (all printed by the command at the top of this file).\n\n")
	w("| target (issue) |")
	for _, e := range envs {
		w(" %s |", e.name)
	}
	w(" rows |\n|---|")
	for range envs {
		w("---|")
	}
	w("---|\n")
	row := func(name, rows string, j judge) {
		w("| %s |", name)
		for _, e := range envs {
			got, met, ok := j(e.name)
			switch {
			case !ok:
				w(" not measured |")
			case met:
				w(" %s — met |", got)
			default:
				w(" %s — **NOT met** |", got)
			}
		}
		w(" %s |\n", rows)
	}
	for _, p := range parts {
		row(fmt.Sprintf("full restore >= 0.4 of a raw consume in a process of its own, N=%d, %d partition(s) (14)", *flagN, p),
			"ratio: ours / raw consume", ratioAtLeast(p, "full", "raw", 0.4))
	}
	if *flagLarge > 0 {
		for _, p := range lparts {
			row(fmt.Sprintf("full restore >= 0.4 of a raw consume in a process of its own, N=%d, %d partition(s) (14)", *flagLarge, p),
				fmt.Sprintf("table-growth section: N=%d: ours / raw consume", *flagLarge), ratioAtLeast(p, "large_full", "large_raw", 0.4))
		}
		for _, p := range lparts {
			row(fmt.Sprintf("peak Go heap of a restore at N=%d within 1.2x of N=%d, %d partition(s) (14)", *flagLarge, *flagN, p),
				fmt.Sprintf("table-growth section: peak Go heap, N=%d / N=%d", *flagLarge, *flagN), ratioAtMost(p, "large_heap", "full_heap", 1.2, false))
		}
	}
	p := parts[0]
	row(fmt.Sprintf("Get + decode p50 <= 3 µs, 1 goroutine, %d partition(s) (6, 14)", p), "Get + decode, 1 goroutine: p50",
		value(p, "get1_p50", "us", func(v float64) bool { return v <= 3 }))
	row(fmt.Sprintf(">= 500k Gets/s on 2 goroutines, %d partition(s) (6, 14)", p), "Get + decode, 2 goroutines",
		value(p, "get2", "rate", func(v float64) bool { return v >= 5e5 }))
	for _, q := range parts {
		row(fmt.Sprintf("delta restore (1%% changed) <= 10%% of a full restore's time, %d partition(s) (14)", q),
			"ratio: delta restore time / full restore time (Open wall clock)", ratioAtMost(q, "delta_s", "full_s", 0.10, true))
	}
	if has(parts, 6) {
		row("partitioned: one member of three restores in <= 40% of a whole-topic restore's time, 6 partitions (14)",
			"ratio: partitioned: one member of three, its restore alone / whole-topic restore", ratioAtMost(6, "part_restore_s", "part_whole_s", 0.40, false))
	}
	row(fmt.Sprintf("full restore >= 1,000,000 records/s, %d partition(s) (6)", p), "Full restore, ours (records/s)",
		value(p, "full", "rate", func(v float64) bool { return v >= 1e6 }))
	row(fmt.Sprintf("full restore >= 70%% of bbolt alone, %d partition(s) (6)", p), "ratio: ours / bbolt alone", ratioAtLeast(p, "full", "bolt", 0.7))
	row(fmt.Sprintf("full restore >= 2x goka's path, %d partition(s) (6)", p), "ratio: ours / goka's path", ratioAtLeast(p, "full", "goka", 2))
	row(fmt.Sprintf("peak Go heap of a restore <= 256 MiB, N=%d, %d partition(s) (6)", *flagN, p), "Full restore, ours: peak Go heap",
		value(p, "full_heap", "bytes", func(v float64) bool { return v <= 256<<20 }))
	row(fmt.Sprintf("delta restore >= 300,000 records/s, %d partition(s) (6)", p), "Delta restore after 1% of keys changed (records/s, restore phase)",
		value(p, "delta", "rate", func(v float64) bool { return v >= 3e5 }))
	row(fmt.Sprintf("delta restore (1%% changed) <= 5%% of a full restore's time, %d partition(s) (6)", p),
		"ratio: delta restore time / full restore time (Open wall clock)", ratioAtMost(p, "delta_s", "full_s", 0.05, true))
	row(fmt.Sprintf("sync Put p50 <= 100 µs, %d partition(s) (6)", p), "Put, sync, 1 caller: p50",
		value(p, "put1_p50", "us", func(v float64) bool { return v <= 100 }))
	row(fmt.Sprintf(">= 150k Puts/s with 64 callers or PutAsync, %d partition(s) (6)", p), "Put, 64 concurrent callers; PutAsync",
		func(env string) (string, bool, bool) {
			a, ok1 := m(env, p, "put64")
			c, ok2 := m(env, p, "putasync")
			if !ok1 && !ok2 {
				return "", false, false
			}
			return fmtVal(max(a, c), "rate"), max(a, c) >= 1.5e5, true
		})
	row(fmt.Sprintf("Put -> visible p50 <= 5 ms, %d partition(s) (6)", p), "Put -> visible in another store's Get: p50",
		value(p, "vis_p50", "ms", func(v float64) bool { return v <= 5 }))
	return b.String()
}
