package kvstore_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

// User and UserV1 are the shared test values of testdata's user schemas.
type (
	User   = testdata.User
	UserV1 = testdata.UserV1
)

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
		kvstore.ValueSchema(testdata.UserV2Schema),
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

// restartable is a broker on a held address (heldPort) and a data directory,
// that a test can stop and start again, with a registry that outlives it.
// It starts stopped.
type restartable struct {
	t    *testing.T
	port *heldPort
	data string
	reg  *httptest.Server
	c    *embedded.Cluster
}

func newRestartable(t *testing.T) *restartable {
	b := &restartable{t: t, port: holdPort(t), data: t.TempDir(),
		reg: httptest.NewServer(srfake.NewRegistry().Handler())}
	t.Cleanup(b.reg.Close)
	t.Cleanup(b.stop)
	return b
}

// start starts the broker on the held address and the data directory.
func (b *restartable) start() {
	b.t.Helper()
	c, err := embedded.Start(embedded.KafkaListener(b.port.listen(b.t)), embedded.DataDir(b.data))
	require.NoError(b.t, err)
	b.c = c
}

func (b *restartable) stop() {
	if b.c != nil {
		b.c.Close()
		b.c = nil
	}
}

// opts returns the options of a two-partition store on the broker, with a
// fresh cache dir.
func (b *restartable) opts(extra ...kvstore.Option) []kvstore.Option {
	return append([]kvstore.Option{
		kvstore.Brokers(b.port.addr), kvstore.Registry(b.reg.URL), kvstore.ValueSchema(testdata.UserV2Schema),
		kvstore.Dir(b.t.TempDir()), kvstore.Partitions(2),
	}, extra...)
}

func (b *restartable) open(extra ...kvstore.Option) *kvstore.Store[User] {
	b.t.Helper()
	s, err := kvstore.Open[User](ctxT(b.t), "restartable", b.opts(extra...)...)
	require.NoError(b.t, err)
	b.t.Cleanup(func() { s.Close() })
	return s
}

// foreignProducer writes to the test topic with a raw kgo client, as a
// producer of another kind (another language's client, a tool) would.
type foreignProducer struct {
	t     *testing.T
	cl    *kgo.Client
	codec *serde.Codec[User]
}

// foreignProducer returns a producer that places keys with place (crc32 or
// murmur2 style); nil means kgo's default, murmur2, like Java's.
func (e *env) foreignProducer(place func(key []byte, n int) int) *foreignProducer {
	e.t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(e.seeds...), kgo.DefaultProduceTopic(e.topic)}
	if place != nil {
		opts = append(opts, kgo.RecordPartitioner(kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
			return func(r *kgo.Record, n int) int { return place(r.Key, n) }
		})))
	}
	cl, err := kgo.NewClient(opts...)
	require.NoError(e.t, err)
	e.t.Cleanup(cl.Close)
	return &foreignProducer{t: e.t, cl: cl, codec: e.userCodec()}
}

// put writes key and value as they are (nil: a null value) and returns the
// record's offset.
func (p *foreignProducer) put(key, value []byte) int64 {
	p.t.Helper()
	r := &kgo.Record{Key: key, Value: value}
	require.NoError(p.t, p.cl.ProduceSync(ctxT(p.t), r).FirstErr())
	return r.Offset
}

// users writes n Users, Confluent-framed as a store writes them, under the
// keys "user-0".."user-<n-1>" with FirstName tag, and returns the keys.
func (p *foreignProducer) users(n int, tag string) []string {
	p.t.Helper()
	var keys []string
	for i := range n {
		k := fmt.Sprintf("user-%d", i)
		b, err := p.codec.Encode(User{FirstName: tag, LastName: k, Age: int32(i)})
		require.NoError(p.t, err)
		p.put([]byte(k), b)
		keys = append(keys, k)
	}
	return keys
}

// userCodec returns a codec of the test registry with the store's schema.
func (e *env) userCodec() *serde.Codec[User] {
	e.t.Helper()
	rc, err := sr.NewClient(sr.URLs(e.regURL))
	require.NoError(e.t, err)
	c, err := serde.New[User](ctxT(e.t), rc, serde.SubjectFor(e.topic), testdata.UserV2Schema, sr.CompatBackward)
	require.NoError(e.t, err)
	return c
}

// lockedBuffer is a bytes.Buffer slog can write to from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// captureLogs returns a logger at debug level and what it writes.
func captureLogs() (*slog.Logger, *lockedBuffer) {
	buf := &lockedBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// holdFetches holds, until release is closed, every fetch that asks the
// broker to wait maxWaitMs (the mark of the client a test means to pause),
// counting the fetches it holds.
func holdFetches(kc *kfake.Cluster, maxWaitMs int32) (held *atomic.Int32, release chan struct{}) {
	held, release = new(atomic.Int32), make(chan struct{})
	kc.ControlKey(kmsg.Fetch.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if req.(*kmsg.FetchRequest).MaxWaitMillis != maxWaitMs {
			return nil, nil, false
		}
		select {
		case <-release:
		default:
			held.Add(1)
			kc.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	return held, release
}

// acked fails t unless a write (Put, Delete) was acknowledged, and returns
// its Position: acked(t)(s.Put(ctx, k, v)).
func acked(t testing.TB) func(kvstore.Position, error) kvstore.Position {
	return func(pos kvstore.Position, err error) kvstore.Position {
		t.Helper()
		require.NoError(t, err)
		require.False(t, pos.IsZero(), "an acknowledged write has a position")
		return pos
	}
}

// errOf returns a write's error alone: require.ErrorIs(t, errOf(s.Put(ctx, k, v)), want).
func errOf(_ kvstore.Position, err error) error { return err }
