// Command counters keeps per-user activity counters in a compacted topic:
// for every click event of a stream it reads the user's counter record,
// adds the click, and writes the record back (read-modify-write). Every
// update is a new record for the same key, so compaction is what keeps the
// topic small: after the broker compacts it, a store restoring on a fresh
// cache reads about one record per user instead of one per click. It runs on
// an in-process Kafka broker and schema registry unless -brokers and
// -registry point elsewhere (on a real cluster, compaction runs on the
// broker's own schedule).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"maps"
	"math/rand/v2"
	"os"
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

func main() {
	brokers := flag.String("brokers", "", "Kafka bootstrap servers, comma separated (default: an in-process broker)")
	registry := flag.String("registry", "", "schema registry URL (default: an in-process registry)")
	topic := flag.String("topic", "user-activity", "compacted topic to use")
	events := flag.Int("events", 500, "number of click events to generate")
	flag.Parse()
	if err := run(context.Background(), *brokers, *registry, *topic, *events); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, brokers, registry, topic string, events int) error {
	seeds := strings.Split(brokers, ",")
	var cluster *embedded.Cluster
	if brokers == "" {
		c, err := embedded.Start()
		if err != nil {
			return err
		}
		defer c.Close()
		cluster = c
		seeds, registry = c.Brokers(), c.RegistryURL()
		fmt.Printf("in-process Kafka at %s, schema registry at %s\n", seeds[0], registry)
	}
	open := func() (*kvstore.Store[Activity], func(), error) {
		dir, err := os.MkdirTemp("", "counters-cache-")
		if err != nil {
			return nil, nil, err
		}
		s, err := kvstore.Open[Activity](ctx, topic, kvstore.Brokers(seeds...), kvstore.Registry(registry),
			kvstore.ValueSchema(activityAvsc), kvstore.Dir(dir))
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		return s, func() { s.Close(); os.RemoveAll(dir) }, nil
	}

	store, done, err := open()
	if err != nil {
		return err
	}
	defer done()

	// A reproducible stream of clicks; the model counts them in memory to
	// check the store against.
	users := []string{"user-ada", "user-alan", "user-grace", "user-linus", "user-margaret"}
	pages := []string{"/", "/search", "/cart", "/checkout"}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	model := map[string]int64{}
	for i := range events {
		c := click{user: users[rng.IntN(len(users))], page: pages[rng.IntN(len(pages))], at: start.Add(time.Duration(i) * time.Second)}
		if err := count(ctx, store, c); err != nil {
			return err
		}
		model[c.user]++
	}
	fmt.Printf("applied %d click events for %d users:\n", events, len(model))
	if err := printCounters(ctx, store, model); err != nil {
		return err
	}

	if cluster != nil {
		cluster.Kafka().Compact()
		fmt.Println("compacted the topic")
	}
	fresh, done2, err := open()
	if err != nil {
		return err
	}
	defer done2()
	rs := fresh.Stats().Restore
	fmt.Printf("a second store on an empty cache restored %d records for %d clicks (%s restore):\n", rs.Records, events, rs.Mode)
	return printCounters(ctx, fresh, model)
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
	return s.Put(ctx, c.user, a)
}

// printCounters prints every user's counters and checks them against the
// model.
func printCounters(ctx context.Context, s *kvstore.Store[Activity], model map[string]int64) error {
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
		fmt.Printf("  %-14s %4d clicks, last %s  %s\n", e.Key, e.Value.Clicks, e.Value.LastClick.Format(time.TimeOnly), strings.Join(per, " "))
	}
	if n != len(model) {
		return fmt.Errorf("store has %d users, the stream had %d", n, len(model))
	}
	return nil
}
