// Command orders keeps an order-status table in a compacted topic: one
// record per order ID, moving from created to paid to shipped, and a
// tombstone when an order is cancelled. It applies a stream of order events,
// refusing transitions the state machine does not allow (checked against the
// current status read from the store), and restarts halfway through, as a
// deploy would: the store closes and opens again on the same cache directory
// (-dir), where a delta restore finds everything it wrote already in the
// cache and reads nothing from the topic. It runs on an in-process Kafka
// broker and schema registry unless -brokers and -registry point elsewhere;
// without -dir the cache goes in a temporary directory, removed at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
)

// orderAvsc is the value schema.
const orderAvsc = `{
  "type": "record",
  "name": "Order",
  "namespace": "com.example.orders",
  "doc": "An order's current status. A cancelled order has no record: it is deleted (a tombstone).",
  "fields": [
    {"name": "customer_id", "type": "string"},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["CREATED", "PAID", "SHIPPED"]}},
    {"name": "total_cents", "type": "long"},
    {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}
  ]
}`

// Order matches orderAvsc.
type Order struct {
	CustomerID string    `avro:"customer_id"`
	Status     string    `avro:"status"`
	TotalCents int64     `avro:"total_cents"`
	UpdatedAt  time.Time `avro:"updated_at"`
}

// event is one message of the order stream.
type event struct {
	order, kind string // kind: created, paid, shipped, cancelled
	customer    string // for created
	totalCents  int64  // for created
}

// next says which status an event moves an order to from the status it has
// ("" for none); cancelled deletes the order.
var next = map[string]map[string]string{
	"created":   {"": "CREATED"},
	"paid":      {"CREATED": "PAID"},
	"shipped":   {"PAID": "SHIPPED"},
	"cancelled": {"CREATED": "", "PAID": ""},
}

var errRejected = errors.New("transition not allowed")

func main() {
	brokers := flag.String("brokers", "", "Kafka bootstrap servers, comma separated (default: an in-process broker)")
	registry := flag.String("registry", "", "schema registry URL (default: an in-process registry)")
	topic := flag.String("topic", "order-status", "compacted topic to use")
	dir := flag.String("dir", "", "cache directory (default: a temporary one, removed at the end)")
	flag.Parse()
	if err := run(context.Background(), *brokers, *registry, *topic, *dir); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, brokers, registry, topic, dir string) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "orders-cache-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	if brokers == "" {
		c, err := embedded.Start()
		if err != nil {
			return err
		}
		defer c.Close()
		brokers, registry = strings.Join(c.Brokers(), ","), c.RegistryURL()
		fmt.Printf("in-process Kafka at %s, schema registry at %s\n", brokers, registry)
	}
	opts := []kvstore.Option{kvstore.Brokers(strings.Split(brokers, ",")...), kvstore.Registry(registry),
		kvstore.ValueSchema(orderAvsc), kvstore.Dir(dir)}
	store, err := kvstore.Open[Order](ctx, topic, opts...)
	if err != nil {
		return err
	}
	defer func() { store.Close() }()

	stream := []event{
		{order: "order-1001", kind: "created", customer: "c-7", totalCents: 4999},
		{order: "order-1002", kind: "created", customer: "c-3", totalCents: 1250},
		{order: "order-1001", kind: "paid"},
		{order: "order-1003", kind: "created", customer: "c-7", totalCents: 899},
		{order: "order-1003", kind: "shipped"}, // not paid yet: rejected
		{order: "order-1002", kind: "cancelled"},
		{order: "order-1001", kind: "shipped"},
		{order: "order-1001", kind: "cancelled"}, // already shipped: rejected
		{order: "order-1003", kind: "paid"},
		{order: "order-1004", kind: "created", customer: "c-9", totalCents: 15000},
	}
	half := len(stream) / 2
	if err := applyAll(ctx, store, stream[:half]); err != nil {
		return err
	}

	// A deploy: the processor stops and starts again on its cache directory.
	if err := store.Close(); err != nil {
		return err
	}
	if store, err = kvstore.Open[Order](ctx, topic, opts...); err != nil {
		return err
	}
	rs := store.Stats().Restore
	fmt.Printf("restarted on %s: %s restore, %d records read from the topic\n", dir, rs.Mode, rs.Records)
	if err := applyAll(ctx, store, stream[half:]); err != nil {
		return err
	}

	fmt.Println("order table, cancelled orders gone:")
	for e, err := range store.Scan(ctx, "order-") {
		if err != nil {
			return err
		}
		fmt.Printf("  %s  customer %-4s %-8s %8.2f\n", e.Key, e.Value.CustomerID, e.Value.Status, float64(e.Value.TotalCents)/100)
	}
	return nil
}

// applyAll applies events in order, printing what became of each.
func applyAll(ctx context.Context, s *kvstore.Store[Order], events []event) error {
	for _, ev := range events {
		switch err := apply(ctx, s, ev); {
		case errors.Is(err, errRejected):
			fmt.Printf("%-10s %-9s rejected: %v\n", ev.order, ev.kind, err)
		case err != nil:
			return err
		default:
			fmt.Printf("%-10s %-9s ok\n", ev.order, ev.kind)
		}
	}
	return nil
}

// apply moves one order through the state machine: it reads the order's
// current status, checks the event is allowed, and writes the new status or,
// for a cancellation, a tombstone. One writer per order is assumed (partition
// the event stream by order ID): the store has no compare-and-set.
func apply(ctx context.Context, s *kvstore.Store[Order], ev event) error {
	cur, ok, err := s.Get(ctx, ev.order)
	if err != nil {
		return err
	}
	from := ""
	if ok {
		from = cur.Status
	}
	to, allowed := next[ev.kind][from]
	if !allowed {
		if from == "" {
			from = "no order"
		}
		return fmt.Errorf("%w: %s from %s", errRejected, ev.kind, from)
	}
	if ev.kind == "cancelled" {
		_, err := s.Delete(ctx, ev.order)
		return err
	}
	if ev.kind == "created" {
		cur = Order{CustomerID: ev.customer, TotalCents: ev.totalCents}
	}
	cur.Status, cur.UpdatedAt = to, time.Now().UTC().Truncate(time.Millisecond)
	_, err = s.Put(ctx, ev.order, cur)
	return err
}
