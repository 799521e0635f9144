package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/httpapi"
	"github.com/compactkv/compactkv/kvstore"
)

// twoStores opens two stores on one in-process broker: "profiles" and
// "other", a topic of its own.
func twoStores(t *testing.T) (profiles, other *kvstore.Store[httpapi.User]) {
	t.Helper()
	c := startCluster(t)
	return openStore(t, c, "profiles", t.TempDir(), kvstore.Partitions(3)),
		openStore(t, c, "other", t.TempDir(), kvstore.Partitions(3))
}

const ada = `{"first_name":"Ada","last_name":"Lovelace","age":36}`

func TestWritesAnswerWithTheirPosition(t *testing.T) {
	s, _ := newStore(t)
	_, h := servingAPI(s, "full")

	r := call(t, h, "PUT", "/profiles/a", ada)
	require.Equal(t, 200, r.code, r.raw)
	put, err := kvstore.ParsePosition(r.header.Get(httpapi.PositionHeader))
	require.NoError(t, err)
	require.False(t, put.IsZero())

	r = call(t, h, "DELETE", "/profiles/a", "")
	require.Equal(t, 204, r.code, r.raw)
	del, err := kvstore.ParsePosition(r.header.Get(httpapi.PositionHeader))
	require.NoError(t, err)
	require.Greater(t, del.Offsets()[0], put.Offsets()[0], "the tombstone lands after the PUT")

	require.Empty(t, call(t, h, "DELETE", "/profiles/a", "").header.Get(httpapi.PositionHeader), "a 404 wrote nothing")
	require.Empty(t, call(t, h, "PUT", "/profiles/a", `{}`).header.Get(httpapi.PositionHeader), "a 400 wrote nothing")
}

func TestReadsWithATokenAreServedOnceItIsApplied(t *testing.T) {
	s, _ := twoStores(t)
	api, h := servingAPI(s, "full")

	var tokens []string
	for _, id := range []string{"a", "b", "c", "d"} {
		r := call(t, h, "PUT", "/profiles/"+id, ada)
		require.Equal(t, 200, r.code, r.raw)
		tokens = append(tokens, r.header.Get(httpapi.PositionHeader))
	}
	for _, hd := range []http.Header{
		tokenHeader(tokens[0]),
		tokenHeader(tokens...),                              // repeated header
		tokenHeader(strings.Join(tokens, ", ")),             // comma-separated
		tokenHeader(tokens[0]+","+tokens[1], "", tokens[3]), // both, and an empty value
	} {
		r := callWith(t, h, "GET", "/profiles/a", "", hd)
		require.Equal(t, 200, r.code, r.raw)
		require.Equal(t, "Ada", r.body["first_name"])
		r = callWith(t, h, "GET", "/profiles?limit=10", "", hd)
		require.Equal(t, 200, r.code, r.raw)
		require.Len(t, r.body["items"], 4)
	}
	r := callWith(t, h, "DELETE", "/profiles/d", "", tokenHeader(tokens...))
	require.Equal(t, 204, r.code, r.raw)
	require.Equal(t, 9.0, metric(t, api, `profilesvc_read_wait_duration_seconds_count{kind="token",outcome="ok"}`))
}

func TestBadOrForeignTokensAre400NamingTheHeader(t *testing.T) {
	s, other := twoStores(t)
	api, h := servingAPI(s, "full")
	r := call(t, h, "PUT", "/profiles/a", ada)
	require.Equal(t, 200, r.code, r.raw)
	mine := r.header.Get(httpapi.PositionHeader)
	pos, err := other.Put(ctxT(t), "a", httpapi.User{FirstName: "Other"})
	require.NoError(t, err)
	foreign := pos.String()

	for _, c := range []struct {
		name   string
		header http.Header
		says   string
	}{
		{"malformed", tokenHeader("not a token!"), `"not a token!" is a malformed Kvstore-Position token (not unpadded URL-safe base64)`},
		{"truncated", tokenHeader(mine[:len(mine)-3]), "is a malformed Kvstore-Position token ("},
		{"another topic's", tokenHeader(foreign), "the token is not of this service's topic: "},
		{"two topics' merged", tokenHeader(mine + "," + foreign), "different topics"},
		{"two topics' in two headers", tokenHeader(foreign, mine), "different topics"},
	} {
		for _, rq := range [][2]string{{"GET", "/profiles/a"}, {"GET", "/profiles"}, {"DELETE", "/profiles/a"}} {
			t.Run(c.name+" "+rq[0]+" "+rq[1], func(t *testing.T) {
				r := callWith(t, h, rq[0], rq[1], "", c.header)
				require.Equal(t, 400, r.code, r.raw)
				require.Equal(t, "application/json", r.header.Get("Content-Type"))
				require.Equal(t, httpapi.PositionHeader, r.body["field"])
				require.True(t, strings.HasPrefix(r.body["error"].(string), httpapi.PositionHeader+": "), r.body["error"])
				require.Contains(t, r.body["error"], c.says)
				require.NotContains(t, r.body["error"], "position token of this service")
				require.LessOrEqual(t, strings.Count(r.body["error"].(string), "recreated"), 1,
					"the explanation of a foreign token is given once: %s", r.body["error"])
			})
		}
	}
	r = call(t, h, "GET", "/profiles/a", "")
	require.Equal(t, 200, r.code, "the DELETEs with bad tokens deleted nothing: %s", r.raw)
	require.Equal(t, 3.0, metric(t, api, `profilesvc_read_wait_duration_seconds_count{kind="token",outcome="foreign"}`))
}

// A PUT neither reads nor waits: it ignores a Kvstore-Position header,
// however malformed or foreign, and ?consistent=.
func TestPutIgnoresTokensAndConsistent(t *testing.T) {
	s, other := twoStores(t)
	_, h := servingAPI(s, "full")
	pos, err := other.Put(ctxT(t), "a", httpapi.User{FirstName: "Other"})
	require.NoError(t, err)

	for _, hd := range []http.Header{tokenHeader("not a token!"), tokenHeader(pos.String())} {
		r := callWith(t, h, "PUT", "/profiles/a?consistent=yes", ada, hd)
		require.Equal(t, 200, r.code, r.raw)
		require.NotEmpty(t, r.header.Get(httpapi.PositionHeader))
	}
}

func TestConsistentReadsRunTheBarrier(t *testing.T) {
	s, _ := twoStores(t)
	api, h := servingAPI(s, "full")
	require.Equal(t, 200, call(t, h, "PUT", "/profiles/a", ada).code)

	for _, q := range []string{"?consistent=true", "?consistent=1", "?consistent=True"} {
		r := call(t, h, "GET", "/profiles/a"+q, "")
		require.Equal(t, 200, r.code, r.raw)
		require.Equal(t, "Ada", r.body["first_name"])
		r = call(t, h, "GET", "/profiles"+q+"&prefix=a", "")
		require.Equal(t, 200, r.code, r.raw)
		require.Len(t, r.body["items"], 1)
	}
	require.Equal(t, 404, call(t, h, "GET", "/profiles/nobody?consistent=true", "").code)
	require.Equal(t, 200, call(t, h, "GET", "/profiles/a?consistent=false", "").code)
	require.Equal(t, 7.0, metric(t, api, `profilesvc_read_wait_duration_seconds_count{kind="barrier",outcome="ok"}`))

	for _, target := range []string{"/profiles/a?consistent=yes", "/profiles?consistent=", "/profiles/a?consistent"} {
		r := call(t, h, "GET", target, "")
		require.Equal(t, 400, r.code, target)
		require.Equal(t, "consistent", r.body["field"], target)
		require.Contains(t, r.body["error"], "must be true or false", target)
	}
}

// blockingStore is a real store whose WaitFor and Sync never see the
// position arrive: they return when ctx ends, as a follower that is behind
// would.
type blockingStore struct{ *kvstore.Store[httpapi.User] }

func (blockingStore) WaitFor(ctx context.Context, _ kvstore.Position) error {
	<-ctx.Done()
	return ctx.Err()
}

func (blockingStore) Sync(ctx context.Context, _ ...string) (kvstore.Position, error) {
	<-ctx.Done()
	return kvstore.Position{}, ctx.Err()
}

func TestAWaitPastReadWaitIs504(t *testing.T) {
	real, _ := newStore(t)
	pos, err := real.Put(ctxT(t), "a", httpapi.User{FirstName: "Ada"})
	require.NoError(t, err)
	const readWait = 50 * time.Millisecond
	api, h := servingAPI(blockingStore{real}, "full", httpapi.ReadWait(readWait))

	for _, c := range []struct {
		method, target string
		header         http.Header
		says           string
	}{
		{"GET", "/profiles/a", tokenHeader(pos.String()), "did not apply the position of the Kvstore-Position header within the read wait of 50ms"},
		{"GET", "/profiles", tokenHeader(pos.String()), "did not apply the position"},
		{"DELETE", "/profiles/a", tokenHeader(pos.String()), "did not apply the position"},
		{"GET", "/profiles/a?consistent=true", nil, "did not catch up with the topic for the consistent read within the read wait of 50ms"},
		{"GET", "/profiles?consistent=true", nil, "did not catch up"},
	} {
		began := time.Now()
		r := callWith(t, h, c.method, c.target, "", c.header)
		took := time.Since(began)
		require.Equal(t, 504, r.code, "%s %s: %s", c.method, c.target, r.raw)
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		require.Contains(t, r.body["error"], c.says)
		require.GreaterOrEqual(t, took, readWait)
		require.Less(t, took, readWait+2*time.Second)
	}
	got, ok, err := real.Get(ctxT(t), "a")
	require.NoError(t, err)
	require.True(t, ok, "the DELETE that timed out deleted nothing")
	require.Equal(t, "Ada", got.FirstName)
	require.Equal(t, 3.0, metric(t, api, `profilesvc_read_wait_duration_seconds_count{kind="token",outcome="timeout"}`))
	require.Equal(t, 2.0, metric(t, api, `profilesvc_read_wait_duration_seconds_count{kind="barrier",outcome="timeout"}`))
}

// laggingStore is a real store whose reads miss the keys in hidden until a
// barrier (Sync) has run: a follower behind a write made elsewhere.
type laggingStore struct {
	*kvstore.Store[httpapi.User]
	hidden   map[string]bool
	synced   atomic.Bool
	syncFail error // Sync's error, if set
}

func (s *laggingStore) Get(ctx context.Context, key string) (httpapi.User, bool, error) {
	if s.hidden[key] && !s.synced.Load() {
		return httpapi.User{}, false, nil
	}
	return s.Store.Get(ctx, key)
}

func (s *laggingStore) Sync(ctx context.Context, keys ...string) (kvstore.Position, error) {
	if s.syncFail != nil {
		return kvstore.Position{}, s.syncFail
	}
	pos, err := s.Store.Sync(ctx, keys...)
	if err == nil {
		s.synced.Store(true)
	}
	return pos, err
}

// A DELETE of a profile this instance has not seen yet still deletes it:
// it answers 404 only when a consistent read says the profile is absent.
func TestDeleteOfAProfileThisInstanceHasNotSeenDeletesIt(t *testing.T) {
	real, _ := newStore(t)
	_, err := real.Put(ctxT(t), "a", httpapi.User{FirstName: "Ada"})
	require.NoError(t, err)
	lag := &laggingStore{Store: real, hidden: map[string]bool{"a": true}}
	_, h := servingAPI(lag, "full")
	require.Equal(t, 404, call(t, h, "GET", "/profiles/a", "").code, "a plain read is stale")

	r := call(t, h, "DELETE", "/profiles/a", "")
	require.Equal(t, 204, r.code, r.raw)
	require.NotEmpty(t, r.header.Get(httpapi.PositionHeader))
	_, ok, err := real.Get(ctxT(t), "a")
	require.NoError(t, err)
	require.False(t, ok, "the tombstone was written")
	r = call(t, h, "DELETE", "/profiles/a", "")
	require.Equal(t, 404, r.code, "absent by a consistent read: %s", r.raw)
	require.Contains(t, r.body["error"], `profile "a" not found`)
}

// A DELETE whose barrier cannot run writes the tombstone rather than answer
// 404 on a read that may be stale.
func TestDeleteWritesTheTombstoneWhenTheBarrierFails(t *testing.T) {
	real, _ := newStore(t)
	_, err := real.Put(ctxT(t), "a", httpapi.User{FirstName: "Ada"})
	require.NoError(t, err)
	lag := &laggingStore{Store: real, hidden: map[string]bool{"a": true},
		syncFail: errors.New("kvstore: sync: list the end offsets: broker unreachable")}
	api, h := servingAPI(lag, "full")

	r := call(t, h, "DELETE", "/profiles/a", "")
	require.Equal(t, 204, r.code, r.raw)
	_, ok, err := real.Get(ctxT(t), "a")
	require.NoError(t, err)
	require.False(t, ok)
	require.Equal(t, 1.0, metric(t, api, `profilesvc_read_wait_duration_seconds_count{kind="barrier",outcome="failed"}`))

	r = call(t, h, "GET", "/profiles/a?consistent=true", "")
	require.Equal(t, 503, r.code, "a consistent read cannot be served without its barrier: %s", r.raw)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Contains(t, r.body["error"], "cannot wait for the consistent read's barrier")
}
