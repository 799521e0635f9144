package main

// Three profilesvc instances in partitioned mode (--group) on one topic of
// 6 partitions on one broker: the in-process one, or with
// COMPACTKV_BROKERS set a real one (scripts/ci-real.sh runs
// TestPartitionedInstances that way).

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/config"
	"github.com/compactkv/compactkv/cmd/profilesvc/internal/httpapi"
	"github.com/compactkv/compactkv/embedded"
)

// awaitCondition polls cond every 20ms until it holds or within runs out;
// then it fails the test with what cond last said.
func awaitCondition(t *testing.T, within time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	began := time.Now()
	deadline := began.Add(within)
	for {
		ok, why := cond()
		if ok {
			return time.Since(began)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, within, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// owned returns the partitions /readyz says s owns, and whether s is ready.
func (s *svc) owned() ([]int, bool) {
	code, body := s.readyz()
	raw, _ := body["owned"].([]any)
	var out []int
	for _, p := range raw {
		out = append(out, int(p.(float64)))
	}
	return out, code == http.StatusOK
}

// awaitSplit waits until the instances are ready and own disjoint sets of
// the topic's partitions that together cover all of them, each one at least
// one partition.
func awaitSplit(t *testing.T, partitions int, within time.Duration, members ...*svc) time.Duration {
	t.Helper()
	return awaitCondition(t, within, "a fair split of the partitions", func() (bool, string) {
		seen := map[int]int{}
		var says []string
		ok := true
		for i, m := range members {
			parts, ready := m.owned()
			says = append(says, fmt.Sprintf("member %d ready=%v owns %v", i, ready, parts))
			ok = ok && ready && len(parts) > 0
			for _, p := range parts {
				seen[p]++
			}
		}
		for p := range partitions {
			ok = ok && seen[p] == 1
		}
		return ok && len(seen) == partitions, strings.Join(says, "; ")
	})
}

// listAll pages through GET /profiles?prefix=prefix through s, limit at a
// time, and returns the IDs in order and the number of pages.
func listAll(t *testing.T, s *svc, prefix string, limit int, query string) ([]string, int) {
	t.Helper()
	var ids []string
	after, pages := "", 0
	for {
		r := s.do("GET", fmt.Sprintf("/profiles?prefix=%s&limit=%d&after=%s%s", prefix, limit, after, query), nil)
		require.Equal(t, http.StatusOK, r.code, "%s", r.body)
		var pg struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			Next string `json:"next"`
		}
		require.NoError(t, json.Unmarshal(r.body, &pg))
		pages++
		for _, it := range pg.Items {
			ids = append(ids, it.ID)
		}
		if pg.Next == "" {
			return ids, pages
		}
		require.Len(t, pg.Items, limit, "a page with a next is full")
		after = pg.Next
	}
}

// TestPartitionedInstances: three instances of one group split the topic;
// every key written through one is read through every one (forwarded to
// its owner), listings through any one see every key, page by page across
// owners, and after a kill -9 of one instance the survivors answer every
// key again within the session timeout and a rebalance.
func TestPartitionedInstances(t *testing.T) {
	began := time.Now()
	const partitions = 6
	b := testBroker(t)
	topic := b.topic(t, "split", partitions)
	group := []string{"--group", topic + "-svc", "--session-timeout", "6s", "--standbys", "1"}
	members := []*svc{b.instance(t, topic, group...), b.instance(t, topic, group...), b.instance(t, topic, group...)}
	took := awaitSplit(t, partitions, 30*time.Second, members...)
	t.Logf("three members on %s (%s) split it in %v (%v after the last started)", topic,
		map[bool]string{true: "real broker", false: "in-process broker"}[b.real], time.Since(began).Round(time.Millisecond), took.Round(time.Millisecond))
	for i, m := range members {
		_, rd := m.readyz()
		t.Logf("member %d (%s): owned %v standby %v restored_records %v", i, m.base, rd["owned"], rd["standby"], rd["restored_records"])
	}

	const keys = 60
	want := map[string]string{}
	tokens := map[string]string{}
	for i := range keys {
		id := fmt.Sprintf("user-%02d", i)
		want[id] = fmt.Sprintf("v%d", i)
		r := members[i%3].do("PUT", "/profiles/"+id, profileBody(want[id]))
		require.Equal(t, http.StatusOK, r.code, "%s", r.body)
		tokens[id] = r.header.Get(httpapi.PositionHeader)
	}
	ids := make([]string, 0, keys)
	for id := range want {
		ids = append(ids, id)
	}
	slices.Sort(ids)

	t.Run("every key written through one instance is read through every one", func(t *testing.T) {
		forwarded := 0
		for _, id := range ids {
			for i, m := range members {
				r := m.do("GET", "/profiles/"+id, nil)
				if r.code == http.StatusNotFound {
					// A plain read is eventual: the owner's follower may not
					// have the write yet. With the write's token it has.
					r = m.doWith("GET", "/profiles/"+id, withToken(tokens[id]))
				}
				require.Equal(t, http.StatusOK, r.code, "GET %s through member %d: %s", id, i, r.body)
				require.Equal(t, want[id], r.json(t)["first_name"], "GET %s through member %d", id, i)
				if r.header.Get(httpapi.ForwardedToHeader) != "" {
					forwarded++
				}
				r = m.do("GET", "/profiles/"+id+"?consistent=true", nil)
				require.Equal(t, http.StatusOK, r.code, "GET %s?consistent=true through member %d: %s", id, i, r.body)
				require.Equal(t, want[id], r.json(t)["first_name"])
			}
		}
		// Each key is owned by one of three: two reads of three go elsewhere.
		require.Greater(t, forwarded, keys/2, "reads of others' keys are forwarded")
		var sum float64
		for _, m := range members {
			sum += m.metric(`profilesvc_forwarded_requests_total{outcome="ok"}`)
		}
		require.GreaterOrEqual(t, sum, float64(forwarded))
	})

	t.Run("a forwarded request is not forwarded again", func(t *testing.T) {
		for _, id := range ids {
			for _, m := range members {
				if r := m.do("GET", "/profiles/"+id, nil); r.header.Get(httpapi.ForwardedToHeader) == "" {
					continue // m owns id
				}
				r := m.doWith("GET", "/profiles/"+id, http.Header{httpapi.ForwardedHeader: {"1"}})
				require.Equal(t, http.StatusServiceUnavailable, r.code, "%s", r.body)
				require.Equal(t, "1", r.header.Get("Retry-After"))
				require.Positive(t, m.metric(`profilesvc_forwarded_requests_total{outcome="refused"}`))
				return
			}
		}
		t.Fatal("no member forwards any key")
	})

	t.Run("a DELETE through any instance deletes", func(t *testing.T) {
		for i, id := range []string{"user-00", "user-01", "user-02"} {
			r := members[(i+1)%3].do("DELETE", "/profiles/"+id, nil)
			require.Equal(t, http.StatusNoContent, r.code, "%s", r.body)
			tok := r.header.Get(httpapi.PositionHeader)
			require.NotEmpty(t, tok)
			for j, m := range members {
				r := m.doWith("GET", "/profiles/"+id, withToken(tok))
				require.Equal(t, http.StatusNotFound, r.code, "GET %s through member %d after the DELETE: %s", id, j, r.body)
			}
			require.Equal(t, http.StatusNotFound, members[i%3].do("DELETE", "/profiles/"+id, nil).code)
			delete(want, id)
		}
		ids = ids[3:]
	})

	t.Run("a listing through any instance sees every key, page by page", func(t *testing.T) {
		for i, m := range members {
			got, pages := listAll(t, m, "user-", 7, "&consistent=true")
			require.Equal(t, ids, got, "listing through member %d", i)
			require.Equal(t, (len(ids)+6)/7, pages)
			got, _ = listAll(t, m, "user-", 100, "")
			require.Equal(t, ids, got, "one page through member %d", i)
		}
		got, _ := listAll(t, members[0], "user-1", 4, "")
		require.Equal(t, ids[7:17], got, "prefix user-1")
		// A write through one instance, listed through another with its token.
		r := members[2].do("PUT", "/profiles/user-99", profileBody("late"))
		require.Equal(t, http.StatusOK, r.code)
		r = members[1].doWith("GET", "/profiles?prefix=user-9&limit=5", withToken(r.header.Get(httpapi.PositionHeader)))
		require.Equal(t, http.StatusOK, r.code, "%s", r.body)
		require.Contains(t, string(r.body), `"id":"user-99"`)
		want["user-99"] = "late"
		ids = append(ids, "user-99")
	})

	t.Run("after a kill -9 the survivors answer every key again", func(t *testing.T) {
		victim, survivors := members[2], members[:2]
		lost, _ := victim.owned()
		views := survivors[0].metric("profilesvc_group_rebalances_total")
		killed := time.Now()
		require.NoError(t, victim.cmd.Process.Kill()) // SIGKILL
		<-victim.exited

		in503 := 0
		took := awaitCondition(t, 20*time.Second, "every key answered through the survivors", func() (bool, string) {
			for _, id := range ids {
				for i, m := range survivors {
					r, err := m.try("GET", "/profiles/"+id, nil)
					if err != nil {
						return false, err.Error()
					}
					switch {
					case r.code == http.StatusOK:
						if got := r.json(t)["first_name"]; got != want[id] {
							t.Fatalf("GET %s through survivor %d: %q, want %q", id, i, got, want[id])
						}
					case r.code == http.StatusServiceUnavailable && r.header.Get("Retry-After") == "1":
						in503++
						return false, fmt.Sprintf("GET %s through survivor %d: 503 %s", id, i, r.body)
					default:
						t.Fatalf("GET %s through survivor %d during the failover: %d %s (want 200, or 503 with Retry-After)", id, i, r.code, r.body)
					}
				}
			}
			return true, ""
		})
		for i, m := range survivors {
			_, rd := m.readyz()
			t.Logf("survivor %d: owned %v standby %v restored_records %v", i, rd["owned"], rd["standby"], rd["restored_records"])
		}
		t.Logf("kill -9 of the owner of %v: every key answered again through the survivors %v after the kill (%d answers 503 meanwhile)",
			lost, took.Round(time.Millisecond), in503)
		require.Less(t, time.Since(killed), 20*time.Second)
		awaitSplit(t, partitions, 10*time.Second, survivors...)
		require.Greater(t, survivors[0].metric("profilesvc_group_rebalances_total"), views)
		for i, m := range survivors {
			got, _ := listAll(t, m, "user-", 9, "&consistent=true")
			require.Equal(t, ids, got, "listing through survivor %d", i)
		}
	})
	t.Run("a member restarted on its data directory rejoins and takes its share back", func(t *testing.T) {
		victim := members[2]
		back := start(t, victim.cmd.Dir, victim.cmd.Args[1:], nil)
		took := awaitSplit(t, partitions, 20*time.Second, members[0], members[1], back)
		_, rd := back.readyz()
		t.Logf("rejoined and split again in %v: owned %v standby %v, restored_records %v", took.Round(time.Millisecond),
			rd["owned"], rd["standby"], rd["restored_records"])
		for _, id := range ids {
			for i, m := range []*svc{members[0], members[1], back} {
				r := m.do("GET", "/profiles/"+id+"?consistent=true", nil)
				require.Equal(t, http.StatusOK, r.code, "GET %s through member %d: %s", id, i, r.body)
				require.Equal(t, want[id], r.json(t)["first_name"])
			}
		}
		got, _ := listAll(t, back, "user-", 10, "")
		require.Equal(t, ids, got)
	})
	t.Logf("whole test %v", time.Since(began).Round(time.Millisecond))
}

// doWith is do with extra request headers.
func (s *svc) doWith(method, path string, header http.Header) response {
	s.t.Helper()
	r, err := s.tryWith(method, path, nil, header)
	require.NoError(s.t, err)
	return r
}

// Without --advertise-addr a member advertises where it listens, which must
// then be an address the others can dial.
func TestGroupOnAWildcardAddressNeedsAdvertiseAddr(t *testing.T) {
	cfg, err := config.Load([]string{"--group", "g", "--brokers", "127.0.0.1:1", "--registry", "http://127.0.0.1:1",
		"--data-dir", t.TempDir()}, func(string) (string, bool) { return "", false }, filepath.Join(t.TempDir(), ".env"), io.Discard)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	require.NoError(t, err)
	err = run(t.Context(), cfg, ln, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.ErrorContains(t, err, "--group without --advertise-addr advertises the address --http-addr listens on")
	require.ErrorContains(t, err, "names no host the other members can reach")
}

// --partitions gives a topic profilesvc creates its partition count; an
// existing topic keeps its own.
func TestPartitionsSetsTheCountOfATopicProfilesvcCreates(t *testing.T) {
	c, err := embedded.Start()
	require.NoError(t, err)
	t.Cleanup(c.Close)
	b := broker{brokers: c.Brokers()[0], registry: c.RegistryURL()}
	for topic, want := range map[string]int{b.topic(t, "existing", 2): 2, "created": 4} {
		s := runInProcess(t, "--brokers", b.brokers, "--registry", b.registry, "--topic", topic,
			"--data-dir", t.TempDir(), "--partitions", "4")
		_, rd := s.readyz()
		require.Len(t, rd["partition_stats"], want, "topic %s", topic)
		s.stop()
	}
}
