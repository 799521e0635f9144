// Command profiles keeps user profiles in a compacted topic and a cache
// directory that outlives the program: a profile per user ID, updates that
// overwrite earlier versions, and tombstones that delete a user.
//
// Everything lives under -dir: the in-process Kafka broker's log, its
// schema registry and the store's cache. The program edits some profiles,
// closes the store (a restart, say), lets another writer change the topic
// meanwhile, and opens the store again on the same directory: a delta
// restore, which reads only what changed while it was closed. Run it twice
// with the same -dir and the first open of the second run is a delta restore
// too. Without -dir it uses a temporary directory and removes it.
package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
)

// profileSchema is the topic's value schema.
//
//go:embed profile.avsc
var profileSchema string

// Profile is a value of profileSchema. A nil Email is Avro null.
type Profile struct {
	Name      string   `avro:"name"`
	Email     *string  `avro:"email"`
	Languages []string `avro:"languages"`
}

func (p Profile) String() string {
	email := "no email"
	if p.Email != nil {
		email = *p.Email
	}
	return fmt.Sprintf("%s <%s> speaks %s", p.Name, email, strings.Join(p.Languages, ", "))
}

const topic = "user-profiles"

func main() {
	dir := flag.String("dir", "", "directory for the broker's log, the registry and the cache, kept between runs (default: a temporary one)")
	flag.Parse()
	if *dir == "" {
		tmp, err := os.MkdirTemp("", "profiles-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		*dir = tmp
	}
	if err := run(context.Background(), *dir); err != nil {
		log.Print(err)
		os.Exit(1) // after the deferred RemoveAll
	}
}

func run(ctx context.Context, dir string) error {
	cluster, err := embedded.Start(
		embedded.DataDir(filepath.Join(dir, "kafka")),
		embedded.RegistryFile(filepath.Join(dir, "registry", "schemas.json")))
	if err != nil {
		return err
	}
	defer cluster.Close()
	fmt.Printf("state under %s\n", dir)
	openOn := func(cache string) (*kvstore.Store[Profile], error) {
		return kvstore.Open[Profile](ctx, topic, kvstore.Brokers(cluster.Brokers()...),
			kvstore.Registry(cluster.RegistryURL()), kvstore.ValueSchema(profileSchema), kvstore.Dir(cache))
	}
	cache := filepath.Join(dir, "cache")

	store, err := openOn(cache)
	if err != nil {
		return err
	}
	report("opened", store)
	ada, grace := "ada@example.com", "grace@example.com"
	profiles := []struct {
		id string
		Profile
	}{
		{"user-123", Profile{Name: "Ada Lovelace", Email: &ada, Languages: []string{"en", "fr"}}},
		{"user-456", Profile{Name: "Grace Hopper", Languages: []string{"en"}}},
		{"user-789", Profile{Name: "Alan Turing", Languages: []string{"en", "de"}}},
	}
	for _, p := range profiles {
		if _, err := store.Put(ctx, p.id, p.Profile); err != nil {
			return err
		}
	}
	fmt.Println("wrote 3 profiles; closing the store")
	if err := store.Close(); err != nil {
		return err
	}

	// While the store is closed, another writer (here a second store on a
	// cache of its own) adds an email and deletes a user.
	other, err := openOn(filepath.Join(dir, "other-cache"))
	if err != nil {
		return err
	}
	updated := profiles[1].Profile
	updated.Email = &grace
	if _, err := other.Put(ctx, "user-456", updated); err != nil {
		return err
	}
	if _, err := other.Delete(ctx, "user-789"); err != nil { // a tombstone
		return err
	}
	fmt.Println("meanwhile another writer updated user-456 and deleted user-789")
	if err := other.Close(); err != nil {
		return err
	}

	store, err = openOn(cache)
	if err != nil {
		return err
	}
	defer store.Close()
	report("reopened", store)
	for e, err := range store.Scan(ctx, "user-") {
		if err != nil {
			return err
		}
		fmt.Printf("  %s: %v\n", e.Key, e.Value)
	}
	return nil
}

// report prints how a store restored as it opened.
func report(what string, s *kvstore.Store[Profile]) {
	rs := s.Stats().Restore
	fmt.Printf("%s the store on its cache: %s restore", what, rs.Mode)
	if rs.Reason != "" {
		fmt.Printf(" (%s)", rs.Reason)
	}
	fmt.Printf(", read %d records from the topic\n", rs.Records)
}
