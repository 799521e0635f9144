package httpapi_test

import (
	"errors"
	"math"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/httpapi"
	"github.com/compactkv/compactkv/kvstore"
)

// statsStore is a real store whose Stats the test decides.
type statsStore struct {
	*kvstore.Store[httpapi.User]
	stats atomic.Pointer[kvstore.Stats]
}

func (s *statsStore) Stats() kvstore.Stats { return *s.stats.Load() }

func (s *statsStore) set(parts ...kvstore.PartitionStats) {
	s.stats.Store(&kvstore.Stats{Topic: "profiles", Partitions: parts})
}

// newStatsAPI returns a ready API on a real store (profile "a" in it) whose
// Stats say the store follows both its partitions and is caught up.
func newStatsAPI(t *testing.T, opts ...httpapi.Option) (*httpapi.API, *statsStore) {
	t.Helper()
	real, _ := newStore(t)
	s := &statsStore{Store: real}
	now := time.Now()
	s.set(kvstore.PartitionStats{Partition: 0, State: kvstore.PartitionFollowing, Applied: 7, End: 7, CaughtUpAt: now},
		kvstore.PartitionStats{Partition: 1, State: kvstore.PartitionFollowing, Applied: 3, End: 3, CaughtUpAt: now})
	api := httpapi.New(discard(), "", opts...)
	api.SetReady(s, kvstore.RestoreStats{Mode: "full", Reason: "no cache", Partitions: 2})
	r := call(t, api.Handler(), "PUT", "/profiles/a", `{"first_name":"A","last_name":"B","age":1}`)
	require.Equal(t, 200, r.code, r.raw)
	return api, s
}

// requireReadsServed checks that the profile routes answer from the store.
func requireReadsServed(t *testing.T, api *httpapi.API) {
	t.Helper()
	r := call(t, api.Handler(), "GET", "/profiles/a", "")
	require.Equal(t, 200, r.code, r.raw)
	require.Equal(t, "A", r.body["first_name"])
	r = call(t, api.Handler(), "GET", "/profiles", "")
	require.Equal(t, 200, r.code, r.raw)
	require.Len(t, r.body["items"], 1)
}

// metric returns the value of one sample of /metrics; it fails if absent.
func metric(t *testing.T, api *httpapi.API, sample string) float64 {
	t.Helper()
	raw := call(t, api.Handler(), "GET", "/metrics", "").raw
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(raw)
	require.NotNil(t, m, "no %s in /metrics:\n%s", sample, raw)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

func TestReadyzAnswers503WhileAFollowerIsStoppedAndReadsGoOn(t *testing.T) {
	api, s := newStatsAPI(t)
	require.Equal(t, 200, call(t, api.Handler(), "GET", "/readyz", "").code)

	cause := errors.New(`kvstore: poison record at profiles/1@42: no Confluent header`)
	s.set(kvstore.PartitionStats{Partition: 0, State: kvstore.PartitionFollowing, Applied: 7, End: 7, CaughtUpAt: time.Now()},
		kvstore.PartitionStats{Partition: 1, State: kvstore.PartitionStopped, Applied: 42, End: 45, Lag: 3,
			CaughtUpAt: time.Now().Add(-time.Minute), Err: cause})
	r := call(t, api.Handler(), "GET", "/readyz", "")
	require.Equal(t, 503, r.code, r.raw)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Equal(t, false, r.body["ready"])
	require.Equal(t, []any{map[string]any{"topic": "profiles", "partition": 1.0, "offset": 42.0,
		"state": "stopped", "cause": cause.Error()}}, r.body["unready"])
	require.Subset(t, r.body, map[string]any{"mode": "full", "reason": "no cache", "partitions": 2.0, "topic": "profiles"})
	ps := r.body["partition_stats"].([]any)
	require.Len(t, ps, 2)
	require.Subset(t, ps[1], map[string]any{"partition": 1.0, "state": "stopped", "applied": 42.0, "end": 45.0,
		"lag": 3.0, "error": cause.Error()})
	require.InDelta(t, 60_000, ps[1].(map[string]any)["caught_up_age_ms"], 5_000)
	require.InDelta(t, 60_000, r.body["staleness_ms"], 5_000, "the stalest partition's age")

	h := call(t, api.Handler(), "GET", "/healthz", "")
	require.Equal(t, 200, h.code)
	require.Equal(t, r.body["unready"], h.body["unready"])
	requireReadsServed(t, api)
	require.Equal(t, 0.0, metric(t, api, "profilesvc_ready"))

	// A follower back (a new instance, say) makes it ready again.
	s.set(kvstore.PartitionStats{Partition: 0, State: kvstore.PartitionFollowing, CaughtUpAt: time.Now()})
	require.Equal(t, 200, call(t, api.Handler(), "GET", "/readyz", "").code)
	require.Equal(t, 1.0, metric(t, api, "profilesvc_ready"))
}

func TestMaxStalenessMakesReadyz503OnceAPartitionIsStalerAndReadsGoOn(t *testing.T) {
	api, s := newStatsAPI(t, httpapi.MaxStaleness(10*time.Second))
	r := call(t, api.Handler(), "GET", "/readyz", "")
	require.Equal(t, 200, r.code, "fresh: %s", r.raw)
	require.Equal(t, 10_000.0, r.body["max_staleness_ms"])

	// Stalled on a broker that does not answer, not caught up for a minute.
	outage := errors.New("kvstore: list end offsets of \"profiles\": dial tcp: connection refused")
	s.set(kvstore.PartitionStats{Partition: 0, State: kvstore.PartitionStalled, Applied: 7, End: 7,
		CaughtUpAt: time.Now().Add(-time.Minute), Err: outage},
		kvstore.PartitionStats{Partition: 1, State: kvstore.PartitionFollowing, Applied: 3, End: 3, CaughtUpAt: time.Now()})
	r = call(t, api.Handler(), "GET", "/readyz", "")
	require.Equal(t, 503, r.code, r.raw)
	un := r.body["unready"].([]any)
	require.Len(t, un, 1, "only the stale partition")
	require.Subset(t, un[0], map[string]any{"topic": "profiles", "partition": 0.0, "offset": 7.0, "state": "stalled"})
	require.Regexp(t, `^not caught up with the topic for 1m0(\.\d+)?s, longer than the max staleness 10s \(stalled: kvstore: list end offsets`,
		un[0].(map[string]any)["cause"])
	requireReadsServed(t, api)
	require.Equal(t, 0.0, metric(t, api, "profilesvc_ready"))

	// Following again and caught up: ready.
	s.set(kvstore.PartitionStats{Partition: 0, State: kvstore.PartitionFollowing, Applied: 9, End: 9, CaughtUpAt: time.Now()},
		kvstore.PartitionStats{Partition: 1, State: kvstore.PartitionFollowing, Applied: 3, End: 3, CaughtUpAt: time.Now()})
	require.Equal(t, 200, call(t, api.Handler(), "GET", "/readyz", "").code)

	// Following but lagging, for longer than the bound: stale too.
	s.set(kvstore.PartitionStats{Partition: 0, State: kvstore.PartitionFollowing, Applied: 9, End: 900, Lag: 891,
		CaughtUpAt: time.Now().Add(-11 * time.Second)})
	r = call(t, api.Handler(), "GET", "/readyz", "")
	require.Equal(t, 503, r.code, r.raw)
	require.NotContains(t, r.body["unready"].([]any)[0].(map[string]any)["cause"], "(", "no error to add")
}

// Without --max-staleness a broker outage leaves the service ready: every
// instance would otherwise leave the load balancer at once.
func TestStalledPartitionStaysReadyWithoutMaxStaleness(t *testing.T) {
	api, s := newStatsAPI(t)
	s.set(kvstore.PartitionStats{Partition: 0, State: kvstore.PartitionStalled, Applied: 7, End: 7,
		CaughtUpAt: time.Now().Add(-time.Hour), Err: errors.New("broker gone")})
	r := call(t, api.Handler(), "GET", "/readyz", "")
	require.Equal(t, 200, r.code, r.raw)
	require.Subset(t, r.body["partition_stats"].([]any)[0], map[string]any{"state": "stalled", "error": "broker gone"})
	require.InDelta(t, 3_600_000, r.body["staleness_ms"], 5_000)
}

func TestMetricsExportEachPartitionsStateLagAndAge(t *testing.T) {
	api, s := newStatsAPI(t)
	s.set(kvstore.PartitionStats{Partition: 0, State: kvstore.PartitionFollowing, Applied: 7, End: 19, Lag: 12,
		CaughtUpAt: time.Now().Add(-90 * time.Second)},
		kvstore.PartitionStats{Partition: 1, State: kvstore.PartitionStalled, Applied: 3, End: 3, Err: errors.New("x")})
	for state, want := range map[string]float64{"restoring": 0, "following": 1, "stalled": 0, "stopped": 0} {
		require.Equal(t, want, metric(t, api, `profilesvc_partition_state{partition="0",state="`+state+`"}`), state)
	}
	require.Equal(t, 1.0, metric(t, api, `profilesvc_partition_state{partition="1",state="stalled"}`))
	require.Equal(t, 0.0, metric(t, api, `profilesvc_partition_state{partition="1",state="following"}`))
	require.Equal(t, 12.0, metric(t, api, `profilesvc_partition_lag_records{partition="0"}`))
	require.Equal(t, 0.0, metric(t, api, `profilesvc_partition_lag_records{partition="1"}`))
	require.InDelta(t, 90, metric(t, api, `profilesvc_partition_caught_up_age_seconds{partition="0"}`), 5)
	require.True(t, math.IsInf(metric(t, api, `profilesvc_partition_caught_up_age_seconds{partition="1"}`), 1), "never caught up")
	ps := call(t, api.Handler(), "GET", "/readyz", "").body["partition_stats"].([]any)
	require.Contains(t, ps[1], "caught_up_age_ms", "null, not left out: global mode follows every partition")
	require.Nil(t, ps[1].(map[string]any)["caught_up_age_ms"])
	require.Equal(t, 0.0, ps[1].(map[string]any)["lag"])
	require.Equal(t, 1.0, metric(t, api, "profilesvc_ready"))
	require.Equal(t, 0.0, metric(t, api, `profilesvc_store_operations_in_flight{op="put"}`))

	// Read at each scrape: a change shows at once.
	s.set(kvstore.PartitionStats{Partition: 0, State: kvstore.PartitionStopped, Applied: 7, End: 19, Lag: 12, Err: errors.New("x")})
	require.Equal(t, 1.0, metric(t, api, `profilesvc_partition_state{partition="0",state="stopped"}`))
	require.Equal(t, 0.0, metric(t, api, "profilesvc_ready"))
}

func TestMetricsHaveNoPartitionsBeforeTheStore(t *testing.T) {
	api := httpapi.New(discard(), "")
	raw := call(t, api.Handler(), "GET", "/metrics", "").raw
	require.Contains(t, raw, "profilesvc_ready 0")
	require.NotContains(t, raw, "profilesvc_partition_")
}
