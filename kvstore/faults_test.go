package kvstore_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/serde"
	"github.com/compactkv/compactkv/testdata"
)

// allTopicRecords reads the whole topic and returns every record in it.
func (e *env) allTopicRecords() []*kgo.Record {
	e.t.Helper()
	end := e.endOffsets()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.ConsumeTopics(e.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	require.NoError(e.t, err)
	defer cl.Close()
	var out []*kgo.Record
	seen := map[int32]int64{}
	for {
		done := true
		for p, o := range end {
			if seen[p] < o {
				done = false
			}
		}
		if done {
			return out
		}
		fs := cl.PollFetches(ctxT(e.t))
		require.NoError(e.t, fs.Err())
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			seen[r.Partition] = r.Offset + 1
		})
	}
}

func TestRetriableProduceErrorsAreRetriedWithoutDuplicates(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("fault injection")
	// kgo refreshes metadata at most every MetadataMinAge (default 5s) after
	// NOT_LEADER_FOR_PARTITION; a short one keeps three retries fast.
	s := e.open("", kvstore.KafkaOpts(kgo.MetadataMinAge(50*time.Millisecond)))
	ctx := ctxT(t)
	faults := []*kerr.Error{kerr.NotLeaderForPartition, kerr.RequestTimedOut, kerr.NotEnoughReplicas, kerr.LeaderNotAvailable}
	for i, ke := range faults {
		// Each Put meets three failed produce requests in a row. With
		// REQUEST_TIMED_OUT the broker has appended the batch before it
		// answers: only the idempotent producer keeps the retry from
		// writing it twice.
		h := e.cluster.Kafka().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: e.topic, Err: ke, Count: 3})
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.Put(pctx, fmt.Sprint("k", i), User{FirstName: ke.Message})
		cancel()
		require.NoError(t, err, "Put through %v", ke.Message)
		require.Equal(t, 3, h.Hits(), "every fault answered a request")
		h.Remove()
		got, ok, err := s.Get(ctx, fmt.Sprint("k", i))
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, ke.Message, got.FirstName)
	}
	recs := e.allTopicRecords()
	require.Len(t, recs, len(faults), "one record per Put, no duplicates")
	for i, r := range recs {
		require.Equal(t, fmt.Sprint("k", i), string(r.Key))
	}
	r := e.open("") // a fresh restore agrees
	require.Len(t, contents(t, r), len(faults))
}

func TestAPutThatFailsFatallyIsNotApplied(t *testing.T) {
	e := newEnv(t)
	e.requireKfake("fault injection")
	s := e.open("")
	ctx := ctxT(t)
	acked(t)(s.Put(ctx, "k", User{FirstName: "before"}))
	for _, ke := range []*kerr.Error{kerr.InvalidRecord, kerr.TopicAuthorizationFailed, kerr.CorruptMessage, kerr.MessageTooLarge} {
		t.Run(ke.Message, func(t *testing.T) {
			before := e.endOffsets()
			h := e.cluster.Kafka().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: e.topic, Err: ke, Count: -1})
			defer h.Remove()
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, err := s.Put(pctx, "k", User{FirstName: "after " + ke.Message})
			require.Error(t, err)
			require.Contains(t, err.Error(), `kvstore: write "k"`)
			require.Contains(t, err.Error(), fmt.Sprintf("topic %q partition 0", e.topic))
			_, err = s.Delete(pctx, "k")
			require.Error(t, err)
			h.Remove()

			got, ok, err := s.Get(ctx, "k")
			require.NoError(t, err)
			require.True(t, ok, "the failed Delete was not applied")
			require.Equal(t, "before", got.FirstName, "the failed Put was not applied")
			require.Equal(t, before, e.endOffsets(), "nothing reached the topic")
		})
	}
	acked(t)(s.Put(ctx, "k", User{FirstName: "later"})) // "the store works again once the faults are gone"
	require.Equal(t, map[string]User{"k": {FirstName: "later"}}, contents(t, e.open("")))
}

func TestOpenWithTheBrokerUnreachableFailsInBoundedTimeAndLaterSucceeds(t *testing.T) {
	b := newRestartable(t) // not started: its address refuses connections

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	began := time.Now()
	_, err := kvstore.Open[User](ctx, "t", b.opts()...)
	took := time.Since(began)
	require.Error(t, err)
	require.Less(t, took, 5*time.Second, "Open honours ctx")
	require.Contains(t, err.Error(), `kvstore: open "t"`)
	require.Contains(t, err.Error(), "connection refused")
	t.Logf("unreachable broker: Open failed after %v: %v", took.Round(time.Millisecond), err)

	// A broker that accepts connections and never answers: only ctx ends it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	bctx, bcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer bcancel()
	began = time.Now()
	_, err = kvstore.Open[User](bctx, "t", b.opts(kvstore.Brokers(ln.Addr().String()))...)
	took = time.Since(began)
	require.Error(t, err)
	require.Less(t, took, 5*time.Second, "Open honours ctx")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	t.Logf("silent broker: Open failed after %v: %v", took.Round(time.Millisecond), err)

	b.start() // the same Open now succeeds
	s, err := kvstore.Open[User](ctxT(t), "t", b.opts()...)
	require.NoError(t, err)
	defer s.Close()
	acked(t)(s.Put(ctxT(t), "k", User{FirstName: "reachable"}))
}

func TestTheTailResumesWithoutAGapAfterTheBrokerRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a broker")
	}
	b := newRestartable(t)
	b.start()
	ctx := ctxT(t)
	s, other := b.open(), b.open()

	model := map[string]User{}
	put := func(st *kvstore.Store[User], k string, u User) {
		acked(t)(st.Put(ctx, k, u))
		model[k] = u
	}
	for i := range 20 {
		put(other, fmt.Sprint("before-", i), User{FirstName: "before", Age: int32(i)})
	}
	b.stop() // the broker goes away with the store running

	var acked, failed int
	for i := range 5 {
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		k := fmt.Sprint("outage-", i)
		u := User{FirstName: "outage", Age: int32(i)}
		if _, err := s.Put(pctx, k, u); err == nil {
			model[k] = u
			acked++
		} else {
			failed++
			_, ok, gerr := s.Get(ctx, k)
			require.NoError(t, gerr)
			require.False(t, ok, "a Put that failed is not visible")
		}
		cancel()
	}
	t.Logf("during the outage: %d Puts acknowledged, %d failed", acked, failed)

	b.start() // same data directory, same address
	for i := range 20 {
		put(other, fmt.Sprint("after-", i), User{FirstName: "after", Age: int32(i)})
	}
	// Records written elsewhere after the restart reach s through its tail:
	// the last of them implies all before it (offset order per partition).
	require.Eventually(t, func() bool {
		for i := range 20 {
			if _, ok, err := s.Get(ctx, fmt.Sprint("after-", i)); err != nil || !ok {
				return false
			}
		}
		return true
	}, 30*time.Second, 10*time.Millisecond)
	// The stall clears at the next offset listing that succeeds.
	require.Eventually(t, func() bool { return s.TailErr() == nil }, 10*time.Second, 10*time.Millisecond, "%v", s.TailErr())

	// Records of failed Puts may still have been written; the topic decides.
	topic := contents(t, b.open())
	for k, u := range model {
		require.Equal(t, u, topic[k], "acknowledged %q survives the restart", k)
	}
	require.Eventually(t, func() bool {
		got := map[string]User{}
		for e, err := range s.Scan(ctx, "") {
			if err != nil {
				return false
			}
			got[e.Key] = e.Value
		}
		return fmt.Sprint(got) == fmt.Sprint(topic)
	}, 10*time.Second, 10*time.Millisecond, "the running store equals a fresh restore: no gap")
}

func TestTheRegistryGoingAwayBreaksOnlyWhatNeedsIt(t *testing.T) {
	e := newEnv(t)
	e.requireSrfake("interceptors")
	ctx := ctxT(t)
	s := e.open("")
	acked(t)(s.Put(ctx, "a", User{FirstName: "Ada"}))

	down := func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, `{"error_code":50001,"message":"registry down"}`, http.StatusServiceUnavailable)
		return true
	}
	e.cluster.Registry().Intercept(down)
	defer e.cluster.Registry().ClearInterceptors()

	// Values whose schema ID the store holds keep being read and written.
	got, ok, err := s.Get(ctx, "a")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "Ada", got.FirstName)
	acked(t)(s.Put(ctx, "b", User{FirstName: "Bob"}))
	require.Len(t, contents(t, s), 2)

	// A store with a schema not registered yet cannot start.
	octx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = kvstore.Open[UserV1](octx, e.topic, kvstore.Brokers(e.seeds...), kvstore.Registry(e.regURL),
		kvstore.ValueSchema(testdata.UserV1Schema), kvstore.Dir(t.TempDir()))
	require.Error(t, err)
	require.Contains(t, err.Error(), serde.SubjectFor(e.topic))
	require.Contains(t, err.Error(), "registry down")
	t.Logf("Open with the registry down: %v", err)

	// A record with a schema ID this store has not seen is applied unchecked
	// (the follower does not stop), and Get says why it cannot decode it.
	e.cluster.Registry().ClearInterceptors()
	v1, err := kvstore.Open[UserV1](ctx, e.topic, kvstore.Brokers(e.seeds...), kvstore.Registry(e.regURL),
		kvstore.ValueSchema(testdata.UserV1Schema), kvstore.Dir(t.TempDir()))
	require.NoError(t, err)
	defer v1.Close()
	e.cluster.Registry().Intercept(down)
	acked(t)(v1.Put(ctx, "c", UserV1{FirstName: "Cy"}))
	require.Eventually(t, func() bool {
		_, _, err := s.Get(ctx, "c")
		return err != nil
	}, 20*time.Second, 10*time.Millisecond)
	_, _, err = s.Get(ctx, "c")
	require.ErrorIs(t, err, serde.ErrRegistryUnavailable)
	require.NoError(t, s.TailErr())

	e.cluster.Registry().ClearInterceptors()
	got, ok, err = s.Get(ctx, "c")
	require.NoError(t, err, "decodes once the registry is back")
	require.True(t, ok)
	require.Equal(t, "Cy", got.FirstName)
}

func TestACacheDirectoryThatCannotBeCreatedFailsOpenClearly(t *testing.T) {
	e := newEnv(t)
	// Root ignores permission bits, so make the parent a regular file.
	file := filepath.Join(t.TempDir(), "not-a-dir")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err := kvstore.Open[User](ctxT(t), e.topic, e.opts(filepath.Join(file, "cache"))...)
	require.Error(t, err)
	require.Contains(t, err.Error(), "kvstore: create cache directory")
	require.Contains(t, err.Error(), "not-a-dir")
}

func TestACacheFileThatCannotBeWrittenFailsOpenClearly(t *testing.T) {
	e := newEnv(t)
	e.open("").Put(ctxT(t), "k", User{FirstName: "x"})
	dir := t.TempDir()
	// The file a full restore writes before moving it into place is taken
	// by a directory that cannot be removed.
	tmp := filepath.Join(dir, e.topic+".db.restore")
	require.NoError(t, os.MkdirAll(filepath.Join(tmp, "occupied"), 0o755))
	_, err := kvstore.Open[User](ctxT(t), e.topic, e.opts(dir)...)
	require.Error(t, err)
	require.Contains(t, err.Error(), tmp)
	require.NoFileExists(t, filepath.Join(dir, e.topic+".db"), "no cache is installed")
	t.Logf("cache file cannot be written: %v", err)
}

// TestAFullDiskFailsTheRestoreAndNoWriteIsReportedApplied runs the cache on
// a 1 MiB tmpfs (needs root and mount; skipped otherwise).
func TestAFullDiskFailsTheRestoreAndNoWriteIsReportedApplied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	e := newEnv(t)
	small := t.TempDir()
	if out, err := execMount(small); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s)", err, out)
	}
	t.Cleanup(func() { execUmount(small) })

	// 3 MiB of values: more than the 1 MiB disk holds.
	w := e.open("")
	big := strings.Repeat("x", 16<<10)
	for i := range 200 {
		acked(t)(w.Put(ctxT(t), fmt.Sprint("big-", i), User{FirstName: big}))
	}
	_, err := kvstore.Open[User](ctxT(t), e.topic, e.opts(small)...)
	require.Error(t, err)
	require.Contains(t, err.Error(), "no space left on device")
	// The page writer's goroutine met it writing the new file: the file is
	// gone and nothing was installed.
	require.NoFileExists(t, filepath.Join(small, e.topic+".db.restore"), "the half-written file is removed")
	require.NoFileExists(t, filepath.Join(small, e.topic+".db"), "no cache is installed")
	t.Logf("full disk at Open: %v", err)

	// A store whose disk fills while it runs: Put is acknowledged by the
	// broker (the topic is the truth) and visible through the overlay; the
	// follower stops with the disk error instead of pretending it applied.
	require.NoError(t, os.RemoveAll(filepath.Join(small, e.topic+".db")))
	entries, _ := os.ReadDir(small)
	for _, en := range entries {
		os.RemoveAll(filepath.Join(small, en.Name()))
	}
	other := "small-" + e.topic
	s, err := kvstore.Open[User](ctxT(t), other, e.opts(small)...)
	require.NoError(t, err)
	defer s.Close()
	var acked []string
	for i := range 200 {
		k := fmt.Sprint("k-", i)
		if _, err := s.Put(ctxT(t), k, User{FirstName: big}); err == nil {
			acked = append(acked, k)
		}
		if s.TailErr() != nil {
			break
		}
	}
	require.Eventually(t, func() bool { return s.TailErr() != nil }, 20*time.Second, 10*time.Millisecond)
	require.Contains(t, s.TailErr().Error(), "no space left on device")
	for _, k := range acked {
		_, ok, err := s.Get(ctxT(t), k)
		require.NoError(t, err)
		require.True(t, ok, "acknowledged %q stays visible", k)
	}
	t.Logf("disk filled after %d acknowledged Puts; follower stopped with: %v", len(acked), s.TailErr())
}

func execMount(dir string) ([]byte, error) {
	return exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput()
}

func execUmount(dir string) { _ = exec.Command("umount", dir).Run() }
