package kvstore_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

// Profile has avro struct tags matching testdata/user-v2.avsc.
type Profile struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int32   `avro:"age"`
	Email     *string `avro:"email"`
}

func Example() {
	ctx := context.Background()
	// An in-process broker and registry; use your cluster's addresses instead.
	cluster, err := embedded.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	dir, _ := os.MkdirTemp("", "compactkv-example")
	defer os.RemoveAll(dir)

	store, err := kvstore.Open[Profile](ctx, "user-profiles",
		kvstore.Brokers(cluster.Brokers()...),
		kvstore.Registry(cluster.RegistryURL()),
		kvstore.ValueSchema(testdata.UserV2),
		kvstore.Dir(dir))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	_ = store.Put(ctx, "user-123", Profile{FirstName: "Ada", LastName: "Lovelace", Age: 36})
	_ = store.Put(ctx, "user-456", Profile{FirstName: "Grace", LastName: "Hopper", Age: 85})
	u, ok, _ := store.Get(ctx, "user-123")
	fmt.Println(u.FirstName, u.LastName, u.Age, ok)

	_ = store.Delete(ctx, "user-123") // a tombstone
	_, ok, _ = store.Get(ctx, "user-123")
	fmt.Println("after delete:", ok)

	for e, err := range store.Scan(ctx, "user-") {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Key, e.Value.FirstName)
	}
	// Output:
	// Ada Lovelace 36 true
	// after delete: false
	// user-456 Grace
}

// A store opened on a fresh directory restores everything from the topic.
func ExampleStore_Stats() {
	ctx := context.Background()
	cluster, _ := embedded.Start()
	defer cluster.Close()
	open := func() *kvstore.Store[Profile] {
		dir, _ := os.MkdirTemp("", "compactkv-example")
		s, err := kvstore.Open[Profile](ctx, "user-profiles", kvstore.Brokers(cluster.Brokers()...),
			kvstore.Registry(cluster.RegistryURL()), kvstore.ValueSchema(testdata.UserV2), kvstore.Dir(dir))
		if err != nil {
			log.Fatal(err)
		}
		return s
	}
	w := open()
	defer w.Close()
	for _, k := range []string{"a", "b", "a"} {
		_ = w.Put(ctx, k, Profile{FirstName: k})
	}
	r := open()
	defer r.Close()
	st := r.Stats().Restore
	fmt.Println(st.Mode, st.Reason, st.Records)
	// Output: full no cache 3
}
