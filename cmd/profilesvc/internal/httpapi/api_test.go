package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/httpapi"
	"github.com/compactkv/compactkv/kvstore"
)

func TestNotReadyAnswers503ButHealthz200(t *testing.T) {
	h := httpapi.New(discard(), "").Handler()
	for _, rq := range [][2]string{{"PUT", "/profiles/a"}, {"GET", "/profiles/a"}, {"DELETE", "/profiles/a"}, {"GET", "/profiles"}} {
		r := call(t, h, rq[0], rq[1], `{"first_name":"A","last_name":"B","age":1}`)
		require.Equal(t, 503, r.code, rq)
		require.Equal(t, "1", r.header.Get("Retry-After"))
		require.Contains(t, r.body["error"], "restoring")
	}
	r := call(t, h, "GET", "/readyz", "")
	require.Equal(t, 503, r.code)
	require.Equal(t, false, r.body["ready"])
	r = call(t, h, "GET", "/healthz", "")
	require.Equal(t, 200, r.code)
	require.Equal(t, false, r.body["ready"])
	require.Contains(t, call(t, h, "GET", "/metrics", "").raw, "profilesvc_ready 0")
}

func TestReadyzReportsTheRestore(t *testing.T) {
	s, cache := newStore(t)
	api := httpapi.New(discard(), cache)
	api.SetReady(s, kvstore.RestoreStats{Mode: "full", Reason: "no cache", Records: 12, Bytes: 340, Duration: 1500 * time.Millisecond, Partitions: 1})
	r := call(t, api.Handler(), "GET", "/readyz", "")
	require.Equal(t, 200, r.code)
	require.Subset(t, r.body, map[string]any{"ready": true, "mode": "full", "reason": "no cache",
		"restored_records": 12.0, "restored_bytes": 340.0, "duration_ms": 1500.0, "partitions": 1.0, "topic": "profiles"})
	require.NotContains(t, r.body, "unready")
	require.NotContains(t, r.body, "max_staleness_ms", "off by default")
	ps := r.body["partition_stats"].([]any)
	require.Len(t, ps, 1)
	require.Subset(t, ps[0], map[string]any{"partition": 0.0, "state": "following", "applied": 0.0, "end": 0.0, "lag": 0.0})
	require.GreaterOrEqual(t, ps[0].(map[string]any)["caught_up_age_ms"], 0.0)
	require.NotContains(t, ps[0], "error")
	m := call(t, api.Handler(), "GET", "/metrics", "").raw
	require.Contains(t, m, "profilesvc_ready 1")
	require.Contains(t, m, "profilesvc_restore_records 12")
	require.Contains(t, m, "profilesvc_restore_duration_seconds 1.5")
	require.Contains(t, m, `profilesvc_restore_info{mode="full",reason="no cache"} 1`)
	require.Regexp(t, `profilesvc_cache_size_bytes [1-9]`, m)
}

func TestListPagesThroughEveryProfileInKeyOrder(t *testing.T) {
	s, _ := newStore(t)
	_, h := servingAPI(s, "full")
	var want []string
	for i := range 21 {
		id := fmt.Sprintf("p-%03d", i)
		want = append(want, id)
		r := call(t, h, "PUT", "/profiles/"+id, fmt.Sprintf(`{"first_name":"F%d","last_name":"L","age":%d}`, i, i))
		require.Equal(t, 200, r.code, r.raw)
	}
	require.Equal(t, 200, call(t, h, "PUT", "/profiles/q-1", `{"first_name":"Q","last_name":"L","age":1}`).code)
	require.Equal(t, 204, call(t, h, "DELETE", "/profiles/p-010", "").code)
	want = append(want[:10], want[11:]...)

	// 20 live p- profiles in pages of 5 and 7: with 5 the last page is full
	// and still says there is no next page.
	for _, limit := range []int{5, 7, 100} {
		got, pages := listAll(t, h, "p-", limit)
		require.Equal(t, want, got, "limit %d", limit)
		require.Equal(t, (len(want)+limit-1)/limit, pages, "limit %d", limit)
	}
}

func TestPutBodyEdgeCases(t *testing.T) {
	s, _ := newStore(t)
	_, h := servingAPI(s, "full")
	for _, c := range []struct {
		name, body string
		age        float64 // for 200
		field      string  // for 400
	}{
		{"exponent age", `{"first_name":"A","last_name":"B","age":3e1}`, 30, ""},
		{"whole float age", `{"first_name":"A","last_name":"B","age":30.0}`, 30, ""},
		{"min int32", `{"first_name":"A","last_name":"B","age":-2147483648}`, -2147483648, ""},
		{"surrounding whitespace", " \n{\"first_name\":\"A\",\"last_name\":\"B\",\"age\":1}\n ", 1, ""},
		{"huge exponent", `{"first_name":"A","last_name":"B","age":1e300}`, 0, "age"},
		{"field names match exactly", `{"First_Name":"A","last_name":"B","age":1}`, 0, "First_Name"},
		{"null body", `null`, 0, "body"},
		{"string body", `"x"`, 0, "body"},
		{"boolean age", `{"first_name":"A","last_name":"B","age":true}`, 0, "age"},
		{"object first_name", `{"first_name":{},"last_name":"B","age":1}`, 0, "first_name"},
		{"unknown fields reported first, sorted", `{"zz":1,"aa":2}`, 0, "aa"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := call(t, h, "PUT", "/profiles/edge", c.body)
			if c.field != "" {
				require.Equal(t, 400, r.code, r.raw)
				require.Equal(t, c.field, r.body["field"])
				return
			}
			require.Equal(t, 200, r.code, r.raw)
			require.Equal(t, c.age, r.body["age"])
		})
	}
	r := call(t, h, "PUT", "/profiles/%FF", `{"first_name":"A","last_name":"B","age":1}`)
	require.Equal(t, 400, r.code)
	require.Equal(t, "id", r.body["field"])
	r = call(t, h, "GET", "/nowhere", "")
	require.Equal(t, 404, r.code)
	require.Contains(t, r.body["error"], "/nowhere")
}

func TestClosedStoreAnswers503(t *testing.T) {
	s, _ := newStore(t)
	api := httpapi.New(discard(), "")
	api.SetReady(s, kvstore.RestoreStats{Mode: "full"})
	require.NoError(t, s.Close())
	r := call(t, api.Handler(), "PUT", "/profiles/a", `{"first_name":"A","last_name":"B","age":1}`)
	require.Equal(t, 503, r.code, r.raw)
	require.Contains(t, r.body["error"], "shutting down")
	m := call(t, api.Handler(), "GET", "/metrics", "").raw
	require.Contains(t, m, `profilesvc_store_errors_total{op="put"} 1`)
}

func TestReadyzReportsRestoreProgressWhileRestoring(t *testing.T) {
	api := httpapi.New(discard(), "")
	h := api.Handler()
	l := api.RestoreListener()
	l.OnRestoreStart(kvstore.RestoreStart{Mode: "full", Reason: "no cache", Partitions: []kvstore.PartitionRange{
		{Partition: 0, Start: 0, End: 100}, {Partition: 1, Start: 10, End: 110},
	}})
	l.OnBatchRestored(kvstore.BatchRestored{Partition: 0, Records: 40, Bytes: 4000, Next: 50})
	l.OnBatchRestored(kvstore.BatchRestored{Partition: 1, Records: 45, Bytes: 4500, Next: 60})

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	var body map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	require.Equal(t, false, body["ready"])
	require.Equal(t, "full", body["mode"])
	require.Equal(t, "no cache", body["reason"])
	require.EqualValues(t, 85, body["restored_records"])
	require.EqualValues(t, 50, body["percent"]) // 100 of 200 offsets
}
