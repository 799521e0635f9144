package kvstore_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

// printer is a RestoreListener that tells the parent test about each batch.
type printer struct{}

func (printer) OnRestoreStart(kvstore.RestoreStart)   {}
func (printer) OnBatchRestored(kvstore.BatchRestored) { fmt.Println("batch") }
func (printer) OnRestoreEnd(kvstore.RestoreStats)     {}

// TestHelperRestoreProcess is not a test: it is the child process the
// crash-consistency test starts and kills.
func TestHelperRestoreProcess(t *testing.T) {
	dir := os.Getenv("COMPACTKV_CHILD_DIR")
	if dir == "" {
		t.Skip("helper process, started by TestAProcessKilledDuringRestoreEndsWithTheTopicsState")
	}
	opts := []kvstore.Option{
		kvstore.Brokers(os.Getenv("COMPACTKV_CHILD_BROKERS")), kvstore.Registry(os.Getenv("COMPACTKV_CHILD_REGISTRY")),
		kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(dir), kvstore.RestoreMemory(1 << 20),
		kvstore.OnRestore(printer{}),
		kvstore.KafkaOpts(kgo.FetchMaxPartitionBytes(128<<10), kgo.FetchMaxBytes(128<<10)), // many small batches
	}
	if g := os.Getenv("COMPACTKV_CHILD_GROUP"); g != "" { // partitioned mode: a static member, so that the next child takes its place at once
		opts = append(opts, kvstore.Group(g), kvstore.Advertise("child:1"), kvstore.InstanceID("child"),
			kvstore.SessionTimeout(6*time.Second))
	}
	if os.Getenv("COMPACTKV_CHILD_HOLD") != "" { // the delta Open serves from memory never reaches the file
		kvstore.HoldOverlaid()
	}
	s, err := kvstore.Open[User](context.Background(), os.Getenv("COMPACTKV_CHILD_TOPIC"), opts...)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println("restored", s.Stats().Restore.Mode)
	select {} // wait for the kill
}

// fillRaw writes n records with random keys (a fifth of them tombstones of
// earlier keys) straight to the topic, as another producer would, and
// updates model.
func (e *env) fillRaw(n int, value []byte, model map[string]bool, rng *rand.Rand) {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.DefaultProduceTopic(e.topic),
		kgo.ProducerLinger(5*time.Millisecond))
	require.NoError(e.t, err)
	defer cl.Close()
	keys := make([]string, 0, n)
	for k := range model {
		keys = append(keys, k)
	}
	for range n {
		if len(keys) > 0 && rng.IntN(5) == 0 {
			k := keys[rng.IntN(len(keys))]
			cl.Produce(ctxT(e.t), &kgo.Record{Key: []byte(k)}, nil)
			delete(model, k)
			continue
		}
		k := fmt.Sprintf("key-%016x", rng.Uint64())
		cl.Produce(ctxT(e.t), &kgo.Record{Key: []byte(k), Value: value}, nil)
		model[k] = true
		keys = append(keys, k)
	}
	require.NoError(e.t, cl.Flush(ctxT(e.t)))
}

// encodedValue returns the wire bytes of one User as the store writes them.
func (e *env) encodedValue() []byte {
	e.t.Helper()
	s := e.open("")
	acked(e.t)(s.Put(ctxT(e.t), "template", User{FirstName: "Ada", LastName: "Lovelace", Age: 36}))
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...), kgo.ConsumeTopics(e.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(e.t, err)
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctxT(e.t))
		require.NoError(e.t, fs.Err())
		for _, r := range fs.Records() {
			if string(r.Key) == "template" {
				return r.Value
			}
		}
	}
}

// runChild starts the helper process on dir and kills it with SIGKILL after
// it reported killAfter batches (0: after it finished restoring). It says
// whether the child finished its restore before the kill.
func (e *env) runChild(dir string, killAfter int, env ...string) bool {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRestoreProcess$")
	cmd.Env = append(append(os.Environ(), env...),
		"COMPACTKV_CHILD_DIR="+dir, "COMPACTKV_CHILD_TOPIC="+e.topic,
		"COMPACTKV_CHILD_BROKERS="+strings.Join(e.seeds, ","),
		"COMPACTKV_CHILD_REGISTRY="+e.regURL)
	out, err := cmd.StdoutPipe()
	require.NoError(e.t, err)
	require.NoError(e.t, cmd.Start())
	batches, finished := 0, false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		require.False(e.t, strings.HasPrefix(line, "error:"), line)
		if line == "batch" {
			batches++
		}
		finished = strings.HasPrefix(line, "restored")
		if finished || (killAfter > 0 && batches >= killAfter) {
			break
		}
	}
	require.NoError(e.t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	return finished
}

func TestAProcessKilledDuringRestoreEndsWithTheTopicsState(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills subprocesses")
	}
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(21, 21))
	value := e.encodedValue()
	model := map[string]bool{"template": true}
	e.fillRaw(60_000, value, model, rng)
	dir := t.TempDir()

	// Full restores killed at different points, then one that finishes.
	kills := e.killedRestores(dir, []int{1, 3, 8, 20})
	e.runChild(dir, 0)

	// Delta restores killed midway; then one killed once Open has returned
	// serving a delta from memory that its follower is kept from writing
	// into the file (overlay.go); then one that finishes, and reads that
	// delta again.
	e.fillRaw(30_000, value, model, rng)
	kills += e.killedRestores(dir, []int{1, 3})
	require.Positive(t, kills, "no kill landed during a restore")
	e.runChild(dir, 0)
	e.fillRaw(500, value, model, rng) // within a quarter of the child's 1 MiB RestoreMemory
	require.True(t, e.runChild(dir, 0, "COMPACTKV_CHILD_HOLD=1"), "the delta restore returns")

	s := e.open(dir)
	require.Equal(t, "delta", s.Stats().Restore.Mode)
	require.EqualValues(t, 500, s.Stats().Restore.Records, "the delta the killed process served from memory is read again")
	got := e.requireModel(s, dir, model)
	t.Logf("kills during restore: %d, keys: %d, last restore: %+v", kills, got, s.Stats().Restore)
}

// killedRestores runs the helper process on dir once for each of afters,
// killed after that many batches, and returns how many kills landed
// during a restore.
func (e *env) killedRestores(dir string, afters []int, env ...string) int {
	e.t.Helper()
	kills := 0
	for _, after := range afters {
		if !e.runChild(dir, after, env...) {
			kills++
		}
	}
	return kills
}

// requireModel checks that s holds exactly model's keys and that no
// temporary restore file is left in dir, and returns the key count.
func (e *env) requireModel(s *kvstore.Store[User], dir string, model map[string]bool) int {
	e.t.Helper()
	got := map[string]bool{}
	for en, err := range s.Scan(ctxT(e.t), "") {
		require.NoError(e.t, err)
		got[en.Key] = true
	}
	require.Equal(e.t, len(model), len(got))
	require.Equal(e.t, model, got)
	left, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	require.Empty(e.t, left, "temporary restore files must be cleaned up")
	return len(got)
}

// A member of a partitioned-mode group killed while it restores its
// partitions in one pass (the sort and the page writer, into a new file)
// leaves a file the next start judges right: the one after it, in the
// group again, and a global-mode store on the same file end with the
// topic's state.
func TestAMemberKilledDuringItsRestoreEndsWithTheTopicsState(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills subprocesses")
	}
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(22, 22))
	value := e.encodedValue()
	model := map[string]bool{"template": true}
	e.fillRaw(60_000, value, model, rng)
	dir := t.TempDir()
	group := "COMPACTKV_CHILD_GROUP=" + e.topic + "-members"

	kills := e.killedRestores(dir, []int{1, 3, 8, 20}, group)
	require.Positive(t, kills, "no kill landed during a restore")
	require.True(t, e.runChild(dir, 0, group), "the last member restores")

	s := e.open(dir)
	require.Equal(t, "delta", s.Stats().Restore.Mode, "the member's file is current")
	got := e.requireModel(s, dir, model)
	t.Logf("kills during restore: %d, keys: %d", kills, got)
}
