package kvstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

// User is the seed guide's com.example.User with the optional email of v2.
type User struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int32   `avro:"age"`
	Email     *string `avro:"email"`
}

// UserV1 is the seed guide's original record, without email.
type UserV1 struct {
	FirstName string `avro:"first_name"`
	LastName  string `avro:"last_name"`
	Age       int32  `avro:"age"`
}

// env is one test's in-process broker and registry, or, with
// COMPACTKV_BROKERS set, a real broker and a topic of its own (realmode_test.go).
type env struct {
	t       *testing.T
	cluster *embedded.Cluster
	topic   string

	seeds        []string // brokers the test talks to
	regURL       string   // registry the test talks to
	real         bool     // seeds is a real Kafka cluster, not cluster.Kafka()
	realRegistry bool     // regURL is not cluster.Registry()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c, err := embedded.Start()
	require.NoError(t, err)
	t.Cleanup(c.Close)
	e := &env{t: t, cluster: c, topic: "user-profiles", seeds: c.Brokers(), regURL: c.RegistryURL()}
	e.useRealKafka()
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// opts returns the options every test store needs, with a fresh cache dir
// unless dir is given.
func (e *env) opts(dir string, extra ...kvstore.Option) []kvstore.Option {
	if dir == "" {
		dir = e.t.TempDir()
	}
	return append([]kvstore.Option{
		kvstore.Brokers(e.seeds...),
		kvstore.Registry(e.regURL),
		kvstore.ValueSchema(testdata.UserV2),
		kvstore.Dir(dir),
	}, extra...)
}

func (e *env) open(dir string, extra ...kvstore.Option) *kvstore.Store[User] {
	e.t.Helper()
	s, err := kvstore.Open[User](ctxT(e.t), e.topic, e.opts(dir, extra...)...)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { s.Close() })
	return s
}

// admin returns an admin client of the test broker.
func (e *env) admin() *kadm.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...))
	require.NoError(e.t, err)
	e.t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// endOffsets returns the topic's end offsets.
func (e *env) endOffsets() map[int32]int64 {
	e.t.Helper()
	eo, err := e.admin().ListEndOffsets(ctxT(e.t), e.topic)
	require.NoError(e.t, err)
	out := map[int32]int64{}
	eo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// contents returns everything a store's Scan yields.
func contents(t *testing.T, s *kvstore.Store[User]) map[string]User {
	t.Helper()
	out := map[string]User{}
	for e, err := range s.Scan(ctxT(t), "") {
		require.NoError(t, err)
		out[e.Key] = e.Value
	}
	return out
}

func ptr[T any](v T) *T { return &v }
