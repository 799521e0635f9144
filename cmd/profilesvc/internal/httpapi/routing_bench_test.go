package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/httpapi"
	"github.com/compactkv/compactkv/kvstore"
)

// instance is one profilesvc instance of a partitioned-mode benchmark: its
// API served over loopback HTTP, and its store, a member of the group.
type instance struct {
	srv   *httptest.Server
	addr  string
	api   *httpapi.API
	store *kvstore.Store[httpapi.User]
}

// twoInstances starts two instances in partitioned mode on one topic of two
// partitions on a fresh in-process broker, and returns them once each owns
// one partition, serves it, and both agree on the owners.
func twoInstances(b *testing.B) [2]*instance {
	b.Helper()
	c := startCluster(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var ins [2]*instance
	for i := range ins {
		api := httpapi.New(discard(), "")
		srv := httptest.NewServer(api.Handler()) // 503 until SetReady
		b.Cleanup(srv.Close)
		ins[i] = &instance{srv: srv, addr: strings.TrimPrefix(srv.URL, "http://"), api: api}
	}
	var wg sync.WaitGroup
	var errs [2]error
	for i, in := range ins {
		wg.Go(func() {
			in.store, errs[i] = kvstore.Open[httpapi.User](ctx, "profiles", storeOpts(c, b.TempDir(), kvstore.Partitions(2),
				kvstore.Group("profiles-svc"), kvstore.Advertise(in.addr), kvstore.SessionTimeout(6*time.Second))...)
		})
	}
	wg.Wait()
	for i, in := range ins {
		require.NoError(b, errs[i])
		b.Cleanup(func() { in.store.Close() })
	}

	deadline := time.Now().Add(time.Minute)
	for !split(ins) {
		if time.Now().After(deadline) {
			b.Fatalf("the two instances never split the two partitions: %+v / %+v", ins[0].store.Stats().Partitions, ins[1].store.Stats().Partitions)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, in := range ins {
		in.api.SetReady(in.store, kvstore.RestoreStats{Mode: "partition"})
	}
	return ins
}

// split says whether each instance owns one partition and serves it, and
// both name the same owner of each.
func split(ins [2]*instance) bool {
	owner := map[int32]string{}
	for _, in := range ins {
		owned := 0
		for _, ps := range in.store.Stats().Partitions {
			if ps.Role == kvstore.RoleOwner {
				if ps.State != kvstore.PartitionFollowing {
					return false
				}
				owned++
				owner[ps.Partition] = in.addr
			}
		}
		if owned != 1 {
			return false
		}
	}
	for _, in := range ins {
		for _, ps := range in.store.Stats().Partitions {
			if ps.Owner != owner[ps.Partition] {
				return false
			}
		}
	}
	return len(owner) == 2
}

// keyServedBy returns a key whose owner, as in says, is addr.
func keyServedBy(b *testing.B, in *instance, addr string) string {
	b.Helper()
	for i := range 10000 {
		k := fmt.Sprintf("user-%d", i)
		if _, owner, _ := in.store.Owner(k); owner == addr {
			return k
		}
	}
	b.Fatalf("no key owned by %s", addr)
	return ""
}

// get sends GET url with client, reads the whole answer, and returns its
// latency; it fails b unless the answer is a 200 whose ForwardedToHeader
// is forwardedTo.
func get(b *testing.B, client *http.Client, url, forwardedTo string) time.Duration {
	began := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		b.Fatalf("GET %s: %v", url, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(began)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get(httpapi.ForwardedToHeader) != forwardedTo {
		b.Fatalf("GET %s: %d, %s %q, %v", url, resp.StatusCode, httpapi.ForwardedToHeader, resp.Header.Get(httpapi.ForwardedToHeader), err)
	}
	return took
}

func quantile(d []time.Duration, q float64) time.Duration {
	return d[int(float64(len(d)-1)*q)]
}

// BenchmarkForwardedGet measures what the hop to the owner adds to a read
// in partitioned mode. Two instances (real stores on the in-process broker,
// one partition each, their APIs on loopback HTTP servers); one client
// reads through instance A, over loopback HTTP with keep-alive, a key A
// serves itself (local) and a key B owns (forwarded: A sends it on to B
// over loopback HTTP and relays the answer), alternately, so that both
// ways see the same machine at the same time. Reported: p50 and p99 of
// each way in µs (the time from sending the request to reading the whole
// answer), the difference of the p50s (what the hop adds), and
// forwarded/local at both. ns/op is one read of each way.
func BenchmarkForwardedGet(b *testing.B) {
	ins := twoInstances(b)
	a := ins[0]
	local, remote := keyServedBy(b, a, a.addr), keyServedBy(b, a, ins[1].addr)
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}}
	b.Cleanup(client.CloseIdleConnections)

	// Both profiles written through A; a read of each, with its write's
	// token, waits until its owner has applied it.
	email := "ada@example.com"
	body := fmt.Sprintf(`{"first_name":"Ada","last_name":"Lovelace","age":36,"email":%q}`, email)
	for _, id := range []string{local, remote} {
		req, err := http.NewRequest("PUT", a.srv.URL+"/profiles/"+id, strings.NewReader(body))
		require.NoError(b, err)
		resp, err := client.Do(req)
		require.NoError(b, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(b, http.StatusOK, resp.StatusCode)
		req, err = http.NewRequest("GET", a.srv.URL+"/profiles/"+id, nil)
		require.NoError(b, err)
		req.Header.Set(httpapi.PositionHeader, resp.Header.Get(httpapi.PositionHeader))
		resp, err = client.Do(req)
		require.NoError(b, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(b, http.StatusOK, resp.StatusCode)
	}

	localURL, remoteURL := a.srv.URL+"/profiles/"+local, a.srv.URL+"/profiles/"+remote
	for range 200 { // warm: connections open, pools and caches filled
		get(b, client, localURL, "")
		get(b, client, remoteURL, ins[1].addr)
	}
	lat := [2][]time.Duration{make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)}
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			lat[0] = append(lat[0], get(b, client, localURL, ""))
			lat[1] = append(lat[1], get(b, client, remoteURL, ins[1].addr))
		} else {
			lat[1] = append(lat[1], get(b, client, remoteURL, ins[1].addr))
			lat[0] = append(lat[0], get(b, client, localURL, ""))
		}
	}
	b.StopTimer()

	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	for _, l := range lat {
		slices.Sort(l)
	}
	b.ReportMetric(us(quantile(lat[0], 0.5)), "local-p50-us")
	b.ReportMetric(us(quantile(lat[0], 0.99)), "local-p99-us")
	b.ReportMetric(us(quantile(lat[1], 0.5)), "fwd-p50-us")
	b.ReportMetric(us(quantile(lat[1], 0.99)), "fwd-p99-us")
	b.ReportMetric(us(quantile(lat[1], 0.5)-quantile(lat[0], 0.5)), "added-p50-us")
	b.ReportMetric(float64(quantile(lat[1], 0.5))/float64(quantile(lat[0], 0.5)), "fwd/local-p50")
	b.ReportMetric(float64(quantile(lat[1], 0.99))/float64(quantile(lat[0], 0.99)), "fwd/local-p99")
}
