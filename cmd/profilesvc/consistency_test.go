package main

// Three profilesvc instances on one topic (6 partitions) of one broker: the
// in-process one, or with COMPACTKV_BROKERS set a real one
// (scripts/ci-real.sh runs TestThreeInstances that way), with the registry
// of COMPACTKV_REGISTRY or an in-process one.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/httpapi"
	"github.com/compactkv/compactkv/embedded"
)

// broker is where a test's instances meet.
type broker struct {
	brokers  string // bootstrap servers, comma separated
	registry string
	real     bool // COMPACTKV_BROKERS: topics get unique names and are deleted at the end
}

// testBroker returns the broker of COMPACTKV_BROKERS when set, else an
// in-process one for this test; the registry is COMPACTKV_REGISTRY's when
// set, else an in-process one.
func testBroker(t *testing.T) broker {
	t.Helper()
	var b broker
	b.brokers = strings.TrimSpace(os.Getenv("COMPACTKV_BROKERS"))
	b.registry = strings.TrimSpace(os.Getenv("COMPACTKV_REGISTRY"))
	b.real = b.brokers != ""
	if b.brokers == "" || b.registry == "" {
		c, err := embedded.Start()
		require.NoError(t, err)
		t.Cleanup(c.Close)
		if b.brokers == "" {
			b.brokers = c.Brokers()[0]
		}
		if b.registry == "" {
			b.registry = c.RegistryURL()
		}
	}
	return b
}

// topic creates a compacted topic of partitions partitions, named name or,
// on a real broker, name plus a random suffix (deleted when the test ends),
// and returns its name.
func (b broker) topic(t *testing.T, name string, partitions int32) string {
	t.Helper()
	if b.real {
		var r [6]byte
		_, _ = rand.Read(r[:])
		name = "profilesvc-" + name + "-" + hex.EncodeToString(r[:])
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(b.brokers, ",")...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	compact := "compact"
	_, err = adm.CreateTopic(ctx, partitions, 1, map[string]*string{"cleanup.policy": &compact}, name)
	require.NoError(t, err, "create topic %s", name)
	if b.real {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = adm.DeleteTopics(ctx, name)
		})
	}
	return name
}

// instance starts a profilesvc on topic of b, with a data directory of its
// own.
func (b broker) instance(t *testing.T, topic string, args ...string) *svc {
	t.Helper()
	return start(t, t.TempDir(), append([]string{"--http-addr", "127.0.0.1:0",
		"--brokers", b.brokers, "--registry", b.registry, "--topic", topic, "--data-dir", "d"}, args...), nil)
}

func profileBody(firstName string) []byte {
	return fmt.Appendf(nil, `{"first_name":%q,"last_name":"L","age":1}`, firstName)
}

func withToken(tok string) http.Header { return http.Header{httpapi.PositionHeader: {tok}} }

// churn keeps writers PUTting keys of their own through s, so that every
// follower has records to apply, until the test ends (or stop). stop
// returns how many PUTs were acknowledged and how many were not.
func churn(t *testing.T, s *svc, writers int) (stop func() (acked, failed int64)) {
	var acked, failed atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				r, err := s.try("PUT", fmt.Sprintf("/profiles/churn-%d-%d", w, i%64), profileBody(fmt.Sprint(i)))
				if err != nil || r.code != http.StatusOK {
					failed.Add(1)
					continue
				}
				acked.Add(1)
			}
		}()
	}
	stop = sync.OnceValues(func() (int64, int64) {
		close(done)
		wg.Wait()
		return acked.Load(), failed.Load()
	})
	t.Cleanup(func() { stop() })
	return stop
}

// tries runs try(i) for i from 0 to n-1 and returns how many of them
// returned false (each says why with t.Errorf); it logs that count, with
// what was tried and how long it took.
func tries(t *testing.T, what string, n int, try func(i int) bool) (failed int) {
	t.Helper()
	began := time.Now()
	for i := range n {
		if !try(i) {
			failed++
		}
	}
	t.Logf("%s: %d tries, %d failed in %v", what, n, failed, time.Since(began).Round(time.Millisecond))
	return failed
}

// TestThreeInstances: a client writes through one instance and reads or
// deletes through another, while writers through the third keep every
// follower busy. A read with the write's Kvstore-Position token, a read
// with ?consistent=true, and a DELETE each see the write, every time.
func TestThreeInstances(t *testing.T) {
	began := time.Now()
	b := testBroker(t)
	topic := b.topic(t, "people", 6)
	a, bb, c := b.instance(t, topic), b.instance(t, topic), b.instance(t, topic)
	t.Logf("three instances on %s (%s) ready in %v", topic, map[bool]string{true: "real broker", false: "in-process broker"}[b.real], time.Since(began).Round(time.Millisecond))
	stopChurn := churn(t, c, 2)

	// getFirstName reads id through s with header, "" and the code for a
	// non-200.
	getFirstName := func(s *svc, path string, header http.Header) (int, string) {
		t.Helper()
		r, err := s.tryWith("GET", path, nil, header)
		require.NoError(t, err)
		if r.code != http.StatusOK {
			return r.code, ""
		}
		return r.code, r.json(t)["first_name"].(string)
	}
	put := func(s *svc, id, firstName string) string {
		t.Helper()
		r := s.do("PUT", "/profiles/"+id, profileBody(firstName))
		require.Equal(t, http.StatusOK, r.code, "%s", r.body)
		tok := r.header.Get(httpapi.PositionHeader)
		require.NotEmpty(t, tok, "a PUT answers with its position")
		return tok
	}

	t.Run("a read through B with the token of a PUT through A sees it", func(t *testing.T) {
		const n = 300
		plainStale := 0
		stale := tries(t, "token reads", n, func(i int) bool {
			id, want := fmt.Sprintf("rw-%02d", i%24), fmt.Sprintf("v%d", i)
			tok := put(a, id, want)
			code, got := getFirstName(bb, "/profiles/"+id, withToken(tok))
			if got != want {
				t.Errorf("try %d: GET %s through B with the token: %d %q, want 200 %q", i, id, code, got, want)
			}
			// The same read through C, without the token, afterwards: how
			// often the followers are behind at this pace.
			if _, got := getFirstName(c, "/profiles/"+id, nil); got != want {
				plainStale++
			}
			return got == want
		})
		t.Logf("plain reads through C right after the token reads: %d of %d stale", plainStale, n)
		require.Zero(t, stale)
		require.GreaterOrEqual(t, bb.metric(`profilesvc_read_wait_duration_seconds_count{kind="token",outcome="ok"}`), float64(n))
	})

	t.Run("a consistent read through B sees a PUT through A", func(t *testing.T) {
		const n = 300
		stale := tries(t, "consistent reads", n, func(i int) bool {
			id, want := fmt.Sprintf("cr-%02d", i%24), fmt.Sprintf("v%d", i)
			put(a, id, want)
			path := "/profiles/" + id + "?consistent=true"
			if i%3 == 2 {
				path = "/profiles?consistent=true&prefix=" + id + "&limit=1"
			}
			r, err := bb.try("GET", path, nil)
			require.NoError(t, err)
			var got string
			if r.code == http.StatusOK {
				if body := r.json(t); body["items"] != nil {
					if items := body["items"].([]any); len(items) == 1 {
						got = items[0].(map[string]any)["first_name"].(string)
					}
				} else {
					got = body["first_name"].(string)
				}
			}
			if got != want {
				t.Errorf("try %d: GET %s through B: %d %q, want 200 %q", i, path, r.code, got, want)
			}
			return got == want
		})
		require.Zero(t, stale)
		require.GreaterOrEqual(t, bb.metric(`profilesvc_read_wait_duration_seconds_count{kind="barrier",outcome="ok"}`), float64(n))
	})

	t.Run("a DELETE through B right after a PUT through A deletes", func(t *testing.T) {
		missed := tries(t, "deletes", 150, func(i int) bool {
			id := fmt.Sprintf("del-%03d", i)
			put(a, id, "doomed")
			r := bb.do("DELETE", "/profiles/"+id, nil)
			if r.code != http.StatusNoContent {
				t.Errorf("try %d: DELETE %s through B: %d %s, want 204", i, id, r.code, r.body)
				return false
			}
			require.NotEmpty(t, r.header.Get(httpapi.PositionHeader), "a DELETE answers with its position")
			if code, _ := getFirstName(c, "/profiles/"+id+"?consistent=true", nil); code != http.StatusNotFound {
				t.Errorf("try %d: GET %s?consistent=true through C after the DELETE: %d, want 404", i, id, code)
				return false
			}
			return true
		})
		require.Zero(t, missed)
		r := bb.do("DELETE", "/profiles/del-000", nil)
		require.Equal(t, http.StatusNotFound, r.code, "gone by a consistent read: %s", r.body)
	})

	t.Run("tokens that are malformed or of another topic are 400", func(t *testing.T) {
		tok := put(a, "t-1", "mine")
		other := b.instance(t, b.topic(t, "other", 1))
		foreign := put(other, "t-1", "theirs")
		for _, c := range []struct {
			name, token string
		}{
			{"malformed", "not-a-token!"},
			{"of another topic", foreign},
			{"of two topics", tok + "," + foreign},
		} {
			for _, rq := range [][2]string{{"GET", "/profiles/t-1"}, {"GET", "/profiles"}, {"DELETE", "/profiles/t-1"}} {
				r, err := bb.tryWith(rq[0], rq[1], nil, withToken(c.token))
				require.NoError(t, err)
				require.Equal(t, http.StatusBadRequest, r.code, "%s token, %s %s: %s", c.name, rq[0], rq[1], r.body)
				require.Equal(t, httpapi.PositionHeader, r.json(t)["field"])
			}
		}
		code, got := getFirstName(bb, "/profiles/t-1", withToken(tok))
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "mine", got, "the DELETEs with bad tokens deleted nothing")
	})

	acked, failed := stopChurn()
	t.Logf("churn through C: %d PUTs acknowledged, %d failed; whole test %v", acked, failed, time.Since(began).Round(time.Millisecond))
	require.Zero(t, failed)
	require.Positive(t, acked)
}
