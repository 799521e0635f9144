package kvstore_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
)

// profileSchema is the Avro schema of the topic's values. Field names, not
// Go names, tie it to Profile's fields.
const profileSchema = `{
  "type": "record", "name": "Profile", "namespace": "com.example",
  "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": "int"}]
}`

// Profile is a value of profileSchema.
type Profile struct {
	Name string `avro:"name"`
	Age  int32  `avro:"age"`
}

func Example() {
	ctx := context.Background()
	// An in-process broker and registry; use your cluster's addresses instead.
	cluster, err := embedded.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	dir, err := os.MkdirTemp("", "compactkv-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := kvstore.Open[Profile](ctx, "user-profiles",
		kvstore.Brokers(cluster.Brokers()...),
		kvstore.Registry(cluster.RegistryURL()),
		kvstore.ValueSchema(profileSchema),
		kvstore.Dir(dir))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	_, _ = store.Put(ctx, "user-123", Profile{Name: "Ada Lovelace", Age: 36})
	_, _ = store.Put(ctx, "user-456", Profile{Name: "Grace Hopper", Age: 85})
	p, ok, _ := store.Get(ctx, "user-123")
	fmt.Println(p.Name, p.Age, ok)

	_, _ = store.Delete(ctx, "user-123") // a tombstone
	_, ok, _ = store.Get(ctx, "user-123")
	fmt.Println("after delete:", ok)

	for e, err := range store.Scan(ctx, "user-") {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Key, e.Value.Name)
	}
	// Output:
	// Ada Lovelace 36 true
	// after delete: false
	// user-456 Grace Hopper
}

// A store restores from the topic as it opens: all of it into an empty
// cache directory, and into a directory it has used before only the records
// written since it closed (a delta restore).
func ExampleStore_Stats() {
	ctx := context.Background()
	cluster, _ := embedded.Start()
	defer cluster.Close()
	open := func(dir string) *kvstore.Store[Profile] {
		s, err := kvstore.Open[Profile](ctx, "user-profiles", kvstore.Brokers(cluster.Brokers()...),
			kvstore.Registry(cluster.RegistryURL()), kvstore.ValueSchema(profileSchema), kvstore.Dir(dir))
		if err != nil {
			log.Fatal(err)
		}
		return s
	}
	mine, _ := os.MkdirTemp("", "compactkv-example")
	defer os.RemoveAll(mine)
	theirs, _ := os.MkdirTemp("", "compactkv-example")
	defer os.RemoveAll(theirs)

	s := open(mine)
	for _, name := range []string{"a", "b", "a"} {
		_, _ = s.Put(ctx, name, Profile{Name: name})
	}
	s.Close()

	other := open(theirs)
	st := other.Stats().Restore
	fmt.Println(st.Mode, st.Reason, st.Records)
	_, _ = other.Put(ctx, "c", Profile{Name: "c"}) // while s is closed
	other.Close()

	s = open(mine)
	defer s.Close()
	st = s.Stats().Restore
	fmt.Println(st.Mode, st.Records)
	// Output:
	// full no cache 3
	// delta 1
}

// Read-your-writes across instances: the instance that wrote hands the
// write's Position (a token) to the one that reads next, which waits until
// it has applied it. Sync is the barrier for a reader without a token.
func ExampleStore_WaitFor() {
	ctx := context.Background()
	cluster, _ := embedded.Start()
	defer cluster.Close()
	root, _ := os.MkdirTemp("", "compactkv-example")
	defer os.RemoveAll(root)
	open := func() *kvstore.Store[Profile] {
		dir, _ := os.MkdirTemp(root, "instance") // each instance has its own cache
		s, err := kvstore.Open[Profile](ctx, "user-profiles", kvstore.Brokers(cluster.Brokers()...),
			kvstore.Registry(cluster.RegistryURL()), kvstore.ValueSchema(profileSchema), kvstore.Dir(dir))
		if err != nil {
			log.Fatal(err)
		}
		return s
	}
	a, b := open(), open() // two instances of a service, on one topic
	defer a.Close()
	defer b.Close()

	pos, err := a.Put(ctx, "user-123", Profile{Name: "Ada", Age: 36})
	if err != nil {
		log.Fatal(err)
	}
	token := pos.String() // e.g. in an HTTP header

	got, err := kvstore.ParsePosition(token)
	if err != nil {
		log.Fatal(err)
	}
	if err := b.WaitFor(ctx, got); err != nil {
		log.Fatal(err)
	}
	p, ok, _ := b.Get(ctx, "user-123")
	fmt.Println(p.Name, ok)

	_, _ = a.Put(ctx, "user-123", Profile{Name: "Ada Lovelace", Age: 36})
	if _, err := b.Sync(ctx, "user-123"); err != nil { // no token: a read barrier
		log.Fatal(err)
	}
	p, _, _ = b.Get(ctx, "user-123")
	fmt.Println(p.Name)
	// Output:
	// Ada true
	// Ada Lovelace
}
