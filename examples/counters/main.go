// Command counters keeps per-user activity counters in a compacted topic:
// for every click event of a stream it reads the user's counter record,
// adds the click, and writes the record back (read-modify-write). Every
// update is a new record for the same key, so compaction is what keeps the
// topic small. After the stream, the broker compacts the topic and two
// stores open on it: the counter's own, again on its cache directory (-dir),
// reads nothing (a delta restore from its checkpoint), and one on an empty
// directory reads the whole topic, about one record per user instead of one
// per click. It runs on an in-process Kafka broker and schema registry unless
// -brokers and -registry point elsewhere (on a real cluster, compaction runs
// on the broker's own schedule); without -dir the cache goes in a temporary
// directory.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
)

// activityAvsc is the value schema: one record per user.
const activityAvsc = `{
  "type": "record",
  "name": "Activity",
  "namespace": "com.example.activity",
  "fields": [
    {"name": "clicks", "type": "long"},
    {"name": "pages", "type": {"type": "map", "values": "long"}},
    {"name": "last_click", "type": {"type": "long", "logicalType": "timestamp-millis"}}
  ]
}`

// Activity matches activityAvsc.
type Activity struct {
	Clicks    int64            `avro:"clicks"`
	Pages     map[string]int64 `avro:"pages"`
	LastClick time.Time        `avro:"last_click"`
}

// click is one event of the stream.
type click struct {
	user, page string
	at         time.Time
}

// setup says where the store keeps its cache and which cluster it uses.
type setup struct {
	brokers, registry, topic string
	cacheDir                 string
	events                   int
	cluster                  *embedded.Cluster // nil on a cluster of one's own
}

func main() {
	var cfg setup
	flag.StringVar(&cfg.brokers, "brokers", "", "Kafka bootstrap servers, comma separated (default: an in-process broker)")
	flag.StringVar(&cfg.registry, "registry", "", "schema registry URL (default: an in-process registry)")
	flag.StringVar(&cfg.topic, "topic", "user-activity", "compacted topic to use")
	flag.StringVar(&cfg.cacheDir, "dir", "", "the counter's cache directory (default: a temporary one, removed at the end)")
	flag.IntVar(&cfg.events, "events", 500, "number of click events to generate")
	flag.Parse()
	if err := cfg.run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// open opens a store with its cache in dir.
func (cfg *setup) open(ctx context.Context, dir string) (*kvstore.Store[Activity], error) {
	return kvstore.Open[Activity](ctx, cfg.topic, kvstore.Brokers(strings.Split(cfg.brokers, ",")...),
		kvstore.Registry(cfg.registry), kvstore.ValueSchema(activityAvsc), kvstore.Dir(dir))
}

func (cfg *setup) run(ctx context.Context) error {
	tmp, err := os.MkdirTemp("", "counters-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if cfg.cacheDir == "" {
		cfg.cacheDir = filepath.Join(tmp, "cache")
	}
	if cfg.brokers == "" {
		if cfg.cluster, err = embedded.Start(); err != nil {
			return err
		}
		defer cfg.cluster.Close()
		cfg.brokers, cfg.registry = cfg.cluster.Brokers()[0], cfg.cluster.RegistryURL()
	}

	store, err := cfg.open(ctx, cfg.cacheDir)
	if err != nil {
		return err
	}
	// A reproducible stream of clicks; the model counts them in memory to
	// check the store against.
	users := []string{"user-ada", "user-alan", "user-grace", "user-linus", "user-margaret"}
	pages := []string{"/", "/search", "/cart", "/checkout"}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	model := map[string]int64{}
	for i := range cfg.events {
		c := click{user: users[rng.IntN(len(users))], page: pages[rng.IntN(len(pages))], at: start.Add(time.Duration(i) * time.Second)}
		if err := count(ctx, store, c); err != nil {
			store.Close()
			return err
		}
		model[c.user]++
	}
	fmt.Printf("applied %d click events for %d users:\n", cfg.events, len(model))
	err = checkCounters(ctx, store, model, os.Stdout)
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}

	if cfg.cluster != nil {
		cfg.cluster.Kafka().Compact()
		fmt.Println("compacted the topic")
	}
	for _, c := range []struct{ name, dir string }{
		{"the counter's own cache directory", cfg.cacheDir},
		{"an empty directory", filepath.Join(tmp, "empty")},
	} {
		s, err := cfg.open(ctx, c.dir)
		if err != nil {
			return err
		}
		rs := s.Stats().Restore
		err = checkCounters(ctx, s, model, io.Discard)
		s.Close()
		if err != nil {
			return err
		}
		fmt.Printf("a store on %s: %s restore, %d records read for %d clicks, the same counters\n",
			c.name, rs.Mode, rs.Records, cfg.events)
	}
	return nil
}

// count is the read-modify-write of one click. It is safe with one writer
// per user (partition the click stream by user ID, as Kafka Streams would):
// the store has no compare-and-set, so two writers updating the same user
// could lose an increment.
func count(ctx context.Context, s *kvstore.Store[Activity], c click) error {
	a, ok, err := s.Get(ctx, c.user)
	if err != nil {
		return err
	}
	if !ok {
		a = Activity{Pages: map[string]int64{}}
	}
	a.Clicks++
	a.Pages[c.page]++
	a.LastClick = c.at
	_, err = s.Put(ctx, c.user, a)
	return err
}

// checkCounters checks every user's counters against the model, and prints
// them to out.
func checkCounters(ctx context.Context, s *kvstore.Store[Activity], model map[string]int64, out io.Writer) error {
	n := 0
	for e, err := range s.Scan(ctx, "user-") {
		if err != nil {
			return err
		}
		n++
		if e.Value.Clicks != model[e.Key] {
			return fmt.Errorf("%s: store says %d clicks, the stream had %d", e.Key, e.Value.Clicks, model[e.Key])
		}
		var per []string
		for _, p := range slices.Sorted(maps.Keys(e.Value.Pages)) {
			per = append(per, fmt.Sprintf("%s=%d", p, e.Value.Pages[p]))
		}
		fmt.Fprintf(out, "  %-14s %4d clicks, last %s  %s\n", e.Key, e.Value.Clicks, e.Value.LastClick.Format(time.TimeOnly), strings.Join(per, " "))
	}
	if n != len(model) {
		return fmt.Errorf("store has %d users, the stream had %d", n, len(model))
	}
	return nil
}
