// Command profiles is the seed guide's "log compaction for user profiles"
// scenario: a profile per user ID, updates that overwrite earlier versions,
// and tombstones that delete a user. It runs on an in-process Kafka broker and
// schema registry unless -brokers and -registry point elsewhere, then shows
// that a second store on a fresh cache restores the same state from the topic.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

// User matches testdata/user-v2.avsc.
type User struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int32   `avro:"age"`
	Email     *string `avro:"email"`
}

func main() {
	brokers := flag.String("brokers", "", "Kafka bootstrap servers, comma separated (default: an in-process broker)")
	registry := flag.String("registry", "", "schema registry URL (default: an in-process registry)")
	topic := flag.String("topic", "user-profiles", "compacted topic to use")
	flag.Parse()
	if err := run(context.Background(), *brokers, *registry, *topic); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, brokers, registry, topic string) error {
	seeds := strings.Split(brokers, ",")
	if brokers == "" {
		c, err := embedded.Start()
		if err != nil {
			return err
		}
		defer c.Close()
		seeds, registry = c.Brokers(), c.RegistryURL()
		fmt.Printf("in-process Kafka at %s, schema registry at %s\n", seeds[0], registry)
	}
	open := func() (*kvstore.Store[User], func(), error) {
		dir, err := os.MkdirTemp("", "profiles-cache-")
		if err != nil {
			return nil, nil, err
		}
		s, err := kvstore.Open[User](ctx, topic, kvstore.Brokers(seeds...), kvstore.Registry(registry),
			kvstore.ValueSchema(testdata.UserV2), kvstore.Dir(dir))
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
	email := "ada@example.com"
	steps := []struct {
		key  string
		user *User // nil: delete
	}{
		{"user-123", &User{FirstName: "Ada", LastName: "Lovelace", Age: 36}},
		{"user-456", &User{FirstName: "Grace", LastName: "Hopper", Age: 85}},
		{"user-123", &User{FirstName: "Ada", LastName: "Lovelace", Age: 37, Email: &email}}, // update
		{"user-789", &User{FirstName: "Alan", LastName: "Turing", Age: 41}},
		{"user-456", nil}, // tombstone
	}
	for _, st := range steps {
		if st.user == nil {
			if err := store.Delete(ctx, st.key); err != nil {
				return err
			}
			fmt.Printf("delete %s (tombstone)\n", st.key)
			continue
		}
		if err := store.Put(ctx, st.key, *st.user); err != nil {
			return err
		}
		fmt.Printf("put    %s %s %s, %d\n", st.key, st.user.FirstName, st.user.LastName, st.user.Age)
	}

	fresh, done2, err := open()
	if err != nil {
		return err
	}
	defer done2()
	rs := fresh.Stats().Restore
	fmt.Printf("a second store on an empty cache restored %d records (%s restore):\n", rs.Records, rs.Mode)
	for e, err := range fresh.Scan(ctx, "user-") {
		if err != nil {
			return err
		}
		em := "<none>"
		if e.Value.Email != nil {
			em = *e.Value.Email
		}
		fmt.Printf("  %s: %s %s, %d, email %s\n", e.Key, e.Value.FirstName, e.Value.LastName, e.Value.Age, em)
	}
	return nil
}
