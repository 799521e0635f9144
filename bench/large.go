package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

var (
	flagLarge      = flag.Int("large", 4_000_000, "records of the large-table restore runs (0: skipped)")
	flagLargeParts = flag.String("large-partitions", "1,6", "partition counts of the large-table restore runs")
)

// largeParts parses -large-partitions.
func largeParts() ([]int, error) {
	var out []int
	for _, p := range strings.Split(*flagLargeParts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("-large-partitions: %w", err)
		}
		out = append(out, n)
	}
	return out, nil
}

// benchLarge times full restores of a topic of -large records against a
// raw consume of the same topic, each run consuming raw in this process,
// then raw in a process of its own, then restoring, and records
// the restore's peak heap: whether the restore keeps up with the wire and
// stays flat in memory as the table grows (issue 14).
func benchLarge(e *env, parts int, res *results) error {
	if *flagOnlyLarge {
		if err := benchGrowth(e, parts, *flagN, false, res); err != nil {
			return err
		}
	}
	if *flagLarge == 0 {
		return nil
	}
	return benchGrowth(e, parts, *flagLarge, true, res)
}

// benchGrowth fills a topic of n records and, run by run, consumes it raw
// and restores it in full, adding the figures as benchTopic names them, or,
// if large, as the large-table rows do.
func benchGrowth(e *env, parts, n int, large bool, res *results) error {
	ctx := context.Background()
	topic := fmt.Sprintf("bench-growth-%d-%d-%s", n, parts, e.suffix)
	name := map[string]string{"raw": "raw", "raw_warm": "raw_warm", "full": "full", "full_s": "full_s", "heap": "full_heap", "rss": "full_rss"}
	if large {
		topic = fmt.Sprintf("bench-large-%d-%s", parts, e.suffix)
		name = map[string]string{"raw": "large_raw", "raw_warm": "large_raw_warm", "full": "large_full", "full_s": "large_full_s", "heap": "large_heap", "rss": "large_rss"}
	}
	d, err := filledTopic(ctx, e, topic, parts, n)
	if err != nil {
		return err
	}
	d.keys, d.vals = nil, nil // not needed: let the GC have them
	if e.real {
		defer e.adm.DeleteTopics(context.Background(), topic)
	}
	cacheDir := filepath.Join(e.tmp, topic)
	defer os.RemoveAll(cacheDir)
	add := func(fig string, v float64) { res.add(e.name, parts, name[fig], v) }
	for r := range *flagRuns {
		log.Printf("  %d records, run %d/%d", n, r+1, *flagRuns)
		fresh, warm, err := rawConsumes(ctx, e, topic)
		if err != nil {
			return err
		}
		add("raw", fresh)
		add("raw_warm", warm)
		o, err := fullRestore(e, topic, cacheDir)
		if err != nil {
			return err
		}
		ours := float64(o.Records) / o.Seconds
		log.Printf("    raw %.0f records/s (in the bench's process: %.0f), ours %.0f records/s (%.2fx; %.2fx), heap peak %d MiB",
			fresh, warm, ours, ours/fresh, ours/warm, o.HeapPeak>>20)
		add("full", ours)
		add("full_s", o.Seconds)
		add("heap", float64(o.HeapPeak))
		add("rss", float64(o.RSSPeak))
	}
	return nil
}

// largeTable is the report's section on restores at N and at -large.
func largeTable(res *results, envs []*env, lparts []int) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("\n## Full restore as the table grows: N = %d and N = %d\n\n", *flagN, *flagLarge)
	w("Each run consumes the topic raw (baseline 1: in the bench's own process, then in a process of its own) and then restores it (ours, in a process of its own, Open wall clock); ratios are of medians of the same runs, and the targets judge ours against the raw consume in a process of its own.\n\n")
	w("| figure |")
	for _, e := range envs {
		for _, p := range lparts {
			w(" %s, %d partition(s) |", e.name, p)
		}
	}
	w("\n|---|")
	for range envs {
		for range lparts {
			w("---|")
		}
	}
	w("\n")
	line := func(label string, f func(env string, p int) string) {
		w("| %s |", label)
		for _, e := range envs {
			for _, p := range lparts {
				w(" %s |", f(e.name, p))
			}
		}
		w("\n")
	}
	ratio := func(env string, p int, num, den string) (float64, bool) {
		a, ok1 := median(res.get(env, p, num))
		c, ok2 := median(res.get(env, p, den))
		if !ok1 || !ok2 || c == 0 {
			return 0, false
		}
		return a / c, true
	}
	plain := func(v float64, ok bool) string {
		if !ok {
			return "—"
		}
		return fmt.Sprintf("%.2fx", v)
	}
	fx := func(v float64, ok bool) string {
		if !ok {
			return "—"
		}
		return fmt.Sprintf("**%.2fx**", v)
	}
	for _, x := range []struct{ label, n, l, unit string }{
		{"ours (records/s)", "full", "large_full", "rate"},
		{"raw consume, in a process of its own (records/s)", "raw", "large_raw", "rate"},
		{"raw consume, in the bench's process (records/s)", "raw_warm", "large_raw_warm", "rate"},
		{"ours: peak Go heap", "full_heap", "large_heap", "bytes"},
		{"ours: peak RSS", "full_rss", "large_rss", "bytes"},
	} {
		line(fmt.Sprintf("N=%d: %s", *flagN, x.label), func(env string, p int) string { return cell(res.get(env, p, x.n), x.unit) })
		line(fmt.Sprintf("N=%d: %s", *flagLarge, x.label), func(env string, p int) string { return cell(res.get(env, p, x.l), x.unit) })
	}
	line(fmt.Sprintf("**N=%d: ours / raw consume**", *flagN), func(env string, p int) string { return fx(ratio(env, p, "full", "raw")) })
	line(fmt.Sprintf("N=%d: ours / raw consume in the bench's process", *flagN), func(env string, p int) string { return plain(ratio(env, p, "full", "raw_warm")) })
	line(fmt.Sprintf("**N=%d: ours / raw consume**", *flagLarge), func(env string, p int) string { return fx(ratio(env, p, "large_full", "large_raw")) })
	line(fmt.Sprintf("N=%d: ours / raw consume in the bench's process", *flagLarge), func(env string, p int) string {
		return plain(ratio(env, p, "large_full", "large_raw_warm"))
	})
	line(fmt.Sprintf("**peak Go heap, N=%d / N=%d**", *flagLarge, *flagN), func(env string, p int) string {
		return fx(ratio(env, p, "large_heap", "full_heap"))
	})
	return b.String()
}
