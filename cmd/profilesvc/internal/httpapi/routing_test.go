package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/httpapi"
	"github.com/compactkv/compactkv/kvstore"
)

// groupStore is a real store of three partitions (global mode, holding the
// keys the test puts in it) that says it is a member of a group: self
// owns the partitions whose owners entry is self, and serves those only.
// It records the waits it is asked for.
type groupStore struct {
	*kvstore.Store[httpapi.User]
	self string

	mu     sync.Mutex
	owners []string // by partition
	roles  []kvstore.PartitionRole
	waited []kvstore.Position
	synced [][]string
}

const self = "self.invalid:1" // never dialled: a request for self's keys is served locally

func newGroupStore(t *testing.T, owners ...string) *groupStore {
	t.Helper()
	s := openStore(t, startCluster(t), "profiles", t.TempDir(), kvstore.Partitions(3))
	g := &groupStore{Store: s, self: self}
	g.setOwners(owners...)
	return g
}

func (g *groupStore) setOwners(owners ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.owners = owners
	g.roles = make([]kvstore.PartitionRole, len(owners))
	for p, o := range owners {
		g.roles[p] = kvstore.RoleNone
		if o == g.self {
			g.roles[p] = kvstore.RoleOwner
		}
	}
}

func (g *groupStore) Owner(key string) (int32, string, bool) {
	p, _, _ := g.Store.Owner(key)
	g.mu.Lock()
	defer g.mu.Unlock()
	return p, g.owners[p], g.owners[p] == g.self
}

func (g *groupStore) Stats() kvstore.Stats {
	st := g.Store.Stats()
	g.mu.Lock()
	defer g.mu.Unlock()
	st.Group = &kvstore.GroupStats{Group: "members", Advertise: g.self, Generation: 3, Views: 4}
	for i := range st.Partitions {
		st.Partitions[i].Role, st.Partitions[i].Owner = g.roles[i], g.owners[i]
		if g.roles[i] == kvstore.RoleNone {
			st.Partitions[i].State = kvstore.PartitionIdle
		}
	}
	return st
}

func (g *groupStore) WaitFor(ctx context.Context, pos kvstore.Position) error {
	g.mu.Lock()
	g.waited = append(g.waited, pos)
	g.mu.Unlock()
	return g.Store.WaitFor(ctx, pos)
}

func (g *groupStore) Sync(ctx context.Context, keys ...string) (kvstore.Position, error) {
	g.mu.Lock()
	g.synced = append(g.synced, keys)
	g.mu.Unlock()
	return g.Store.Sync(ctx, keys...)
}

// keyOf returns a key of partition p whose name starts with prefix.
func (g *groupStore) keyOf(t *testing.T, prefix string, p int32) string {
	t.Helper()
	for i := range 10000 {
		k := prefix + strconv.Itoa(i)
		if q, _, _ := g.Store.Owner(k); q == p {
			return k
		}
	}
	t.Fatalf("no key of partition %d", p)
	return ""
}

// peer is another instance, faked: it records the requests it gets and
// answers them with answer.
type peer struct {
	srv    *httptest.Server
	addr   string
	mu     sync.Mutex
	got    []*http.Request
	answer func(w http.ResponseWriter, r *http.Request)
}

func newPeer(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *peer {
	p := &peer{answer: answer}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.got = append(p.got, r.Clone(context.Background()))
		p.mu.Unlock()
		p.answer(w, r)
	}))
	t.Cleanup(p.srv.Close)
	p.addr = strings.TrimPrefix(p.srv.URL, "http://")
	return p
}

func (p *peer) requests() []*http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

func TestReadsOfAnotherMembersKeyGoToItsOwnerOnce(t *testing.T) {
	owner := newPeer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(httpapi.PositionHeader, "from-the-owner")
		if r.Method == "DELETE" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q,"first_name":"Owned","last_name":"Elsewhere","age":1,"email":null}`, r.PathValue("id"))
	})
	g := newGroupStore(t, self, "", "")
	g.setOwners(self, owner.addr, "")
	api, h := servingAPI(g, "partition")
	mine, theirs, nobodys := g.keyOf(t, "k", 0), g.keyOf(t, "k", 1), g.keyOf(t, "k", 2)

	// Writes go to Kafka from any member, whoever owns the key.
	var tokens []string
	for _, id := range []string{mine, theirs, nobodys} {
		r := call(t, h, "PUT", "/profiles/"+id, ada)
		require.Equal(t, 200, r.code, r.raw)
		tokens = append(tokens, r.header.Get(httpapi.PositionHeader))
	}
	all := strings.Join(tokens, ",")

	r := callWith(t, h, "GET", "/profiles/"+theirs+"?consistent=true", "", tokenHeader(all))
	require.Equal(t, 200, r.code, r.raw)
	require.Equal(t, "Owned", r.body["first_name"], "the owner's answer")
	require.Equal(t, owner.addr, r.header.Get(httpapi.ForwardedToHeader))
	require.Equal(t, "from-the-owner", r.header.Get(httpapi.PositionHeader))
	r = call(t, h, "DELETE", "/profiles/"+theirs, "")
	require.Equal(t, 204, r.code, r.raw)
	require.Equal(t, "from-the-owner", r.header.Get(httpapi.PositionHeader))
	got := owner.requests()
	require.Len(t, got, 2)
	require.Equal(t, "GET", got[0].Method)
	require.Equal(t, "/profiles/"+theirs+"?consistent=true", got[0].URL.RequestURI())
	require.Equal(t, []string{all}, got[0].Header.Values(httpapi.PositionHeader), "the token goes along")
	require.Equal(t, "1", got[0].Header.Get(httpapi.ForwardedHeader))
	require.Equal(t, "DELETE", got[1].Method, "a DELETE goes to the owner whole: its consistent read needs the owner")
	require.Equal(t, "1", got[1].Header.Get(httpapi.ForwardedHeader))

	// A forwarded request for a key not served here is not forwarded again.
	r = callWith(t, h, "GET", "/profiles/"+theirs, "", http.Header{httpapi.ForwardedHeader: {"1"}})
	require.Equal(t, 503, r.code, r.raw)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Contains(t, r.body["error"], "not served by this instance")
	require.Len(t, owner.requests(), 2)

	// No owner: 503 until the rebalance is done.
	for _, method := range []string{"GET", "DELETE"} {
		r = call(t, h, method, "/profiles/"+nobodys, "")
		require.Equal(t, 503, r.code, r.raw)
		require.Equal(t, "1", r.header.Get("Retry-After"))
		require.Contains(t, r.body["error"], "partition 2 has no owner right now")
	}

	// Its own key this instance serves, waiting for the token's offset of
	// the key's partition only: the others are other owners' to wait for.
	r = callWith(t, h, "GET", "/profiles/"+mine, "", tokenHeader(all))
	require.Equal(t, 200, r.code, r.raw)
	require.Equal(t, "Ada", r.body["first_name"])
	require.Empty(t, r.header.Get(httpapi.ForwardedToHeader))
	g.mu.Lock()
	waited := g.waited[len(g.waited)-1]
	g.mu.Unlock()
	full, err := kvstore.ParsePosition(tokens[0])
	require.NoError(t, err)
	require.Equal(t, map[int32]int64{0: full.Offsets()[0]}, waited.Offsets(), "the token narrowed to the partitions served here (Position.Only)")

	require.Equal(t, 2.0, metric(t, api, `profilesvc_forwarded_requests_total{outcome="ok"}`))
	require.Equal(t, 1.0, metric(t, api, `profilesvc_forwarded_requests_total{outcome="refused"}`))
	require.Equal(t, 4.0, metric(t, api, "profilesvc_group_rebalances_total"))
	require.Equal(t, 3.0, metric(t, api, "profilesvc_group_generation"))
}

func TestAnOwnerThatDoesNotAnswerIs503OrAfterTheForwardTimeout504(t *testing.T) {
	slow := newPeer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	gone := newPeer(t, nil)
	gone.srv.Close()
	g := newGroupStore(t, self, slow.addr, gone.addr)
	api, h := servingAPI(g, "partition", httpapi.ForwardTimeout(100*time.Millisecond))

	began := time.Now()
	r := call(t, h, "GET", "/profiles/"+g.keyOf(t, "k", 1), "")
	require.Equal(t, 504, r.code, r.raw)
	require.Equal(t, "1", r.header.Get("Retry-After"), "a hung owner is retried like one that is gone")
	require.Contains(t, r.body["error"], "did not answer within 100ms")
	require.Less(t, time.Since(began), 5*time.Second)

	r = call(t, h, "GET", "/profiles/"+g.keyOf(t, "k", 2), "")
	require.Equal(t, 503, r.code, r.raw)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Contains(t, r.body["error"], "cannot be reached")
	require.Equal(t, 1.0, metric(t, api, `profilesvc_forwarded_requests_total{outcome="timeout"}`))
	require.Equal(t, 1.0, metric(t, api, `profilesvc_forwarded_requests_total{outcome="unreachable"}`))
}

// pagePeer fakes an owner of partitions parts holding the profiles ids:
// it answers GET /profiles as an instance answers a forwarded listing.
func pagePeer(t *testing.T, parts string, ids []string) *peer {
	ids = slices.Sorted(slices.Values(ids))
	return newPeer(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit, _ := strconv.Atoi(q.Get("limit"))
		if limit == 0 {
			limit = httpapi.DefaultLimit
		}
		type item struct {
			ID        string `json:"id"`
			FirstName string `json:"first_name"`
		}
		out := struct {
			Items []item `json:"items"`
			Next  string `json:"next"`
		}{Items: []item{}}
		for _, id := range ids {
			if !strings.HasPrefix(id, q.Get("prefix")) || id <= q.Get("after") {
				continue
			}
			if len(out.Items) == limit {
				out.Next = out.Items[limit-1].ID
				break
			}
			out.Items = append(out.Items, item{ID: id, FirstName: "P"})
		}
		w.Header().Set(httpapi.PartitionsHeader, parts)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}

func TestListingsMergeEveryOwnersPagesInKeyOrder(t *testing.T) {
	g := newGroupStore(t, self, "", "")
	var mine, theirs1, theirs2 []string
	for i := range 9 {
		mine = append(mine, g.keyOf(t, fmt.Sprintf("u-%d-", i), 0))
		theirs1 = append(theirs1, g.keyOf(t, fmt.Sprintf("u-%d-", i), 1))
		theirs2 = append(theirs2, g.keyOf(t, fmt.Sprintf("u-%d-", i), 2))
	}
	theirs2 = append(theirs2, "v-other-prefix")
	for _, id := range mine {
		_, err := g.Put(ctxT(t), id, httpapi.User{FirstName: "Mine"})
		require.NoError(t, err)
	}
	p1, p2 := pagePeer(t, "1", theirs1), pagePeer(t, "2", theirs2)
	g.setOwners(self, p1.addr, p2.addr)
	_, h := servingAPI(g, "partition")
	want := slices.Sorted(slices.Values(slices.Concat(mine, theirs1, theirs2[:9])))

	for _, limit := range []int{1, 4, 9, 27, 100} {
		got, pages := listAll(t, h, "u-", limit)
		require.Equal(t, want, got, "limit %d", limit)
		require.Equal(t, (len(want)+limit-1)/limit, pages, "limit %d", limit)
	}
	last := p2.requests()[len(p2.requests())-1]
	require.Equal(t, "1", last.Header.Get(httpapi.ForwardedHeader))
	require.Equal(t, "u-", last.URL.Query().Get("prefix"))
	require.Equal(t, "100", last.URL.Query().Get("limit"))

	// A consistent listing runs the barrier on this instance's own
	// partitions (one key of partition 0), and the owners run theirs.
	r := call(t, h, "GET", "/profiles?prefix=u-&consistent=true", "")
	require.Equal(t, 200, r.code, r.raw)
	require.Len(t, r.body["items"], 27)
	g.mu.Lock()
	synced := g.synced[len(g.synced)-1]
	g.mu.Unlock()
	require.Len(t, synced, 1)
	p, _, _ := g.Owner(synced[0])
	require.Equal(t, int32(0), p)
	require.Equal(t, "true", p1.requests()[len(p1.requests())-1].URL.Query().Get("consistent"))

	// Asked by another instance, it answers its own partitions' page.
	r = callWith(t, h, "GET", "/profiles?prefix=u-&limit=100", "", http.Header{httpapi.ForwardedHeader: {"1"}})
	require.Equal(t, 200, r.code, r.raw)
	require.Equal(t, "0", r.header.Get(httpapi.PartitionsHeader))
	require.Len(t, r.body["items"], 9)
}

func TestAListingAnswers503WhileAPartitionHasNoOwnerOrMovedAndRelaysAnOwnersError(t *testing.T) {
	g := newGroupStore(t, self, "", "")
	p1 := pagePeer(t, "1", nil)
	moved := pagePeer(t, "", nil) // its partition 2 moved away before it read
	failing := newPeer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusGatewayTimeout)
		fmt.Fprintln(w, `{"error":"the owner timed out"}`)
	})
	_, h := servingAPI(g, "partition")

	for _, c := range []struct {
		owners []string
		code   int
		says   string
	}{
		{[]string{self, p1.addr, ""}, 503, "partition 2 has no owner right now"},
		{[]string{self, p1.addr, moved.addr}, 503, "partition 2 moved while the listing was read"},
		{[]string{self, p1.addr, failing.addr}, 504, "the owner timed out"},
	} {
		g.setOwners(c.owners...)
		r := call(t, h, "GET", "/profiles", "")
		require.Equal(t, c.code, r.code, r.raw)
		require.Contains(t, r.body["error"], c.says)
		if c.code == 503 {
			require.Equal(t, "1", r.header.Get("Retry-After"))
		}
	}
}

func TestReadyzInPartitionedModeJudgesTheOwnedPartitionsOnly(t *testing.T) {
	real, _ := newStore(t)
	s := &statsStore{Store: real}
	now := time.Now()
	set := func(owned kvstore.PartitionState) {
		st := kvstore.Stats{Topic: "profiles", Group: &kvstore.GroupStats{Group: "members", Advertise: "me:1", Views: 7}, Partitions: []kvstore.PartitionStats{
			{Partition: 0, State: owned, Role: kvstore.RoleOwner, Owner: "me:1", Applied: 5, End: 5, CaughtUpAt: now},
			{Partition: 1, State: kvstore.PartitionRestoring, Role: kvstore.RoleStandby, Owner: "other:1"},
			{Partition: 2, State: kvstore.PartitionStopped, Role: kvstore.RoleNone, Owner: "other:1", Err: errors.New("old news")},
			{Partition: 3, State: kvstore.PartitionIdle, Role: kvstore.RoleNone, Owner: ""},
		}}
		s.stats.Store(&st)
	}
	set(kvstore.PartitionFollowing)
	api := httpapi.New(discard(), "", httpapi.MaxStaleness(time.Hour))
	l := api.RestoreListener()
	l.OnRestoreStart(kvstore.RestoreStart{Mode: "partition", Partitions: []kvstore.PartitionRange{{Partition: 0, End: 10}}})
	l.OnBatchRestored(kvstore.BatchRestored{Partition: 0, Records: 10, Bytes: 100, Next: 10})
	l.OnRestoreEnd(kvstore.RestoreStats{Mode: "partition", Records: 10, Bytes: 100, Duration: time.Second})
	l.OnRestoreStart(kvstore.RestoreStart{Mode: "partition", Partitions: []kvstore.PartitionRange{{Partition: 1, End: 5}}})
	l.OnBatchRestored(kvstore.BatchRestored{Partition: 1, Records: 5, Bytes: 50, Next: 5})
	l.OnRestoreEnd(kvstore.RestoreStats{Mode: "partition", Records: 5, Bytes: 50, Duration: time.Second})
	api.SetReady(s, kvstore.RestoreStats{Mode: "partition", Reason: "partitioned mode", Records: 5, Partitions: 4})
	h := api.Handler()

	r := call(t, h, "GET", "/readyz", "")
	require.Equal(t, 200, r.code, "a standby restoring and someone else's stopped partition do not count: %s", r.raw)
	require.Subset(t, r.body, map[string]any{"ready": true, "owned": []any{0.0}, "standby": []any{1.0},
		"restored_records": 15.0, "restored_bytes": 150.0, "duration_ms": 2000.0})
	require.NotNil(t, r.body["staleness_ms"], "the staleness of the owned partitions")
	require.NotContains(t, r.body, "mode", "partitions restore one by one, by delta or rebuild: no one mode is true")
	require.NotContains(t, r.body, "reason")
	require.Equal(t, 4.0, r.body["partitions"])
	require.Subset(t, r.body["partition_stats"].([]any)[1], map[string]any{"role": "standby", "owner": "other:1"})

	set(kvstore.PartitionRestoring)
	r = call(t, h, "GET", "/readyz", "")
	require.Equal(t, 503, r.code, r.raw)
	un := r.body["unready"].([]any)
	require.Len(t, un, 1)
	require.Subset(t, un[0], map[string]any{"partition": 0.0, "state": "restoring"})
	require.Contains(t, un[0].(map[string]any)["cause"], "still restoring")

	require.Equal(t, 1.0, metric(t, api, `profilesvc_partition_role{partition="1",role="standby"}`))
	require.Equal(t, 0.0, metric(t, api, `profilesvc_partition_role{partition="1",role="owner"}`))
	require.Equal(t, 1.0, metric(t, api, `profilesvc_partition_state{partition="3",state="idle"}`))
	require.Equal(t, 7.0, metric(t, api, "profilesvc_group_rebalances_total"))
}

// A partition another instance owns is not followed here: its cache stands
// still while the topic moves on. Lag and age series for it would only grow
// (and an alert on them fire in normal operation), so neither /metrics nor
// /readyz gives it any; /readyz lists it as idle.
func TestIdlePartitionsHaveNoLagOrAgeInMetricsOrReadyz(t *testing.T) {
	real, _ := newStore(t)
	s := &statsStore{Store: real}
	now := time.Now()
	s.stats.Store(&kvstore.Stats{Topic: "profiles", Group: &kvstore.GroupStats{Group: "members", Advertise: "me:1"},
		Partitions: []kvstore.PartitionStats{
			{Partition: 0, State: kvstore.PartitionFollowing, Role: kvstore.RoleOwner, Owner: "me:1",
				Applied: 5, End: 5, CaughtUpAt: now},
			{Partition: 1, State: kvstore.PartitionFollowing, Role: kvstore.RoleStandby, Owner: "other:1",
				Applied: 8, End: 9, Lag: 1, CaughtUpAt: now.Add(-2 * time.Second)},
			{Partition: 2, State: kvstore.PartitionIdle, Role: kvstore.RoleNone, Owner: "other:1",
				Applied: 5, End: 500, Lag: 495, CaughtUpAt: now.Add(-time.Hour)},
		}})
	api := httpapi.New(discard(), "")
	api.SetReady(s, kvstore.RestoreStats{Mode: "partition", Partitions: 3})

	raw := call(t, api.Handler(), "GET", "/metrics", "").raw
	require.NotContains(t, raw, `profilesvc_partition_lag_records{partition="2"}`)
	require.NotContains(t, raw, `profilesvc_partition_caught_up_age_seconds{partition="2"}`)
	require.Equal(t, 0.0, metric(t, api, `profilesvc_partition_lag_records{partition="0"}`))
	require.Equal(t, 1.0, metric(t, api, `profilesvc_partition_lag_records{partition="1"}`), "a standby's lag counts")
	require.InDelta(t, 2, metric(t, api, `profilesvc_partition_caught_up_age_seconds{partition="1"}`), 1)
	require.Equal(t, 1.0, metric(t, api, `profilesvc_partition_state{partition="2",state="idle"}`))
	require.Equal(t, 1.0, metric(t, api, `profilesvc_partition_role{partition="2",role="none"}`))

	r := call(t, api.Handler(), "GET", "/readyz", "")
	require.Equal(t, 200, r.code, r.raw)
	require.Equal(t, []any{2.0}, r.body["idle"])
	ps := r.body["partition_stats"].([]any)
	require.Equal(t, map[string]any{"partition": 2.0, "state": "idle", "role": "none", "owner": "other:1",
		"applied": 5.0, "end": 500.0}, ps[2], "no lag, no age")
	require.Subset(t, ps[1], map[string]any{"lag": 1.0, "role": "standby"})
	require.Contains(t, ps[1], "caught_up_age_ms")
}

// A listing with a hung owner answers 504 with Retry-After too, and says
// which owner: a listing has no key.
func TestAListingWithAHungOwnerAnswers504WithRetryAfter(t *testing.T) {
	hung := newPeer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	g := newGroupStore(t, self, hung.addr, self)
	_, h := servingAPI(g, "partition", httpapi.ForwardTimeout(100*time.Millisecond))

	r := call(t, h, "GET", "/profiles", "")
	require.Equal(t, 504, r.code, r.raw)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Equal(t, hung.addr, r.header.Get(httpapi.ForwardedToHeader))
	require.Contains(t, r.body["error"], "owner "+hung.addr+", asked for its part of the listing, did not answer within 100ms")
	require.NotContains(t, r.body["error"], "key's owner")
}

// syncBuffer is a log destination safe for the handlers' goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines(substr string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for l := range strings.Lines(b.buf.String()) {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// An owner that is down fails every request sent its way: the failures
// are logged once per owner per 5s, not once each. A listing's failure
// says it was a listing's, not a key's.
func TestFailedForwardsAreLoggedOncePerOwnerAndListingsSayTheyHaveNoKey(t *testing.T) {
	gone, gone2 := newPeer(t, nil), newPeer(t, nil)
	gone.srv.Close()
	gone2.srv.Close()
	g := newGroupStore(t, self, gone.addr, self)
	var logs syncBuffer
	api := httpapi.New(slog.New(slog.NewTextHandler(&logs, nil)), "")
	api.SetReady(g, kvstore.RestoreStats{Mode: "partition"})
	h := api.Handler()

	for range 10 {
		r := call(t, h, "GET", "/profiles/"+g.keyOf(t, "k", 1), "")
		require.Equal(t, 503, r.code, r.raw)
	}
	warned := logs.lines("level=WARN")
	require.Len(t, warned, 1, "one line for ten failures: %v", warned)
	require.Contains(t, warned[0], "cannot forward a request to the key's owner")
	require.Contains(t, warned[0], "owner="+gone.addr)
	require.Contains(t, warned[0], "suppressed=0")
	require.Equal(t, 10.0, metric(t, api, `profilesvc_forwarded_requests_total{outcome="unreachable"}`), "the metric counts each")

	g.setOwners(self, gone2.addr, self)
	r := call(t, h, "GET", "/profiles", "")
	require.Equal(t, 503, r.code, r.raw)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Contains(t, r.body["error"], "owner "+gone2.addr+", asked for its part of the listing, cannot be reached")
	warned = logs.lines("owner=" + gone2.addr)
	require.Len(t, warned, 1, "another owner has a window of its own")
	require.Contains(t, warned[0], "cannot ask an owner for its part of a listing")
	require.NotContains(t, warned[0], "key's owner")
}
