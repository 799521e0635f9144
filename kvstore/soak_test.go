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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

// The soak writer's log: one line per operation, in the order the writer
// made them. "I" (intent) is written before a Put or Delete is issued, "A"
// (acknowledged, fsynced) after it returned nil:
//
//	I <token> <key> put|del
//	A <token> <key> put|del
//
// A token ("<pid>-<seq>") is unique; a Put stores it as the value's LastName.
const (
	soakKeys    = 48
	soakWorkers = 4
)

// TestHelperSoakWriter is the writer process of TestAcknowledgedWritesSurviveKill9.
// It does nothing unless started by that test.
func TestHelperSoakWriter(t *testing.T) {
	dir := os.Getenv("COMPACTKV_SOAK_DIR")
	if dir == "" {
		t.Skip("helper process for TestAcknowledgedWritesSurviveKill9")
	}
	log, err := os.OpenFile(filepath.Join(dir, "acks.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	var logMu sync.Mutex
	record := func(line string, sync bool) {
		logMu.Lock()
		defer logMu.Unlock()
		if _, err := log.WriteString(line + "\n"); err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		if sync {
			if err := log.Sync(); err != nil {
				fmt.Println("error:", err)
				os.Exit(2)
			}
		}
	}
	// Never outlive the test that started it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := kvstore.Open[User](ctx, os.Getenv("COMPACTKV_SOAK_TOPIC"),
		kvstore.Brokers(strings.Split(os.Getenv("COMPACTKV_SOAK_BROKERS"), ",")...),
		kvstore.Registry(os.Getenv("COMPACTKV_SOAK_REGISTRY")),
		kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(filepath.Join(dir, "cache")), kvstore.Partitions(3))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println("ready")
	pid := os.Getpid()
	var wg sync.WaitGroup
	for w := range soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(pid), uint64(w)))
			for seq := w; ctx.Err() == nil; seq += soakWorkers {
				// Worker w owns the keys k with k%soakWorkers == w, so the
				// operations on one key are sequential within a process.
				key := fmt.Sprintf("soak-%02d", rng.IntN(soakKeys/soakWorkers)*soakWorkers+w)
				token := fmt.Sprintf("%d-%d", pid, seq)
				op := "put"
				if rng.IntN(4) == 0 {
					op = "del"
				}
				record(fmt.Sprintf("I %s %s %s", token, key, op), false)
				var err error
				if op == "put" {
					_, err = s.Put(ctx, key, User{FirstName: key, LastName: token, Age: int32(seq)})
				} else {
					_, err = s.Delete(ctx, key)
				}
				if err == nil {
					record(fmt.Sprintf("A %s %s %s", token, key, op), true)
				}
			}
		}()
	}
	wg.Wait()
}

// soakLog is what the writer's log says about each key.
type soakLog struct {
	acked    int
	inFlight int // issued, never acknowledged: in flight at a kill
	// allowed[key] holds the states the key may be in: "" for absent, else
	// a token. The last acknowledged operation, and every operation issued
	// after it that was never acknowledged (in flight at a kill).
	allowed map[string]map[string]bool
}

func readSoakLog(t *testing.T, path string) soakLog {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	type ev struct{ token, op string }
	pending := map[string][]ev{} // key -> intents since its last ack
	last := map[string]string{}  // key -> state after its last ack
	ackedTokens := map[string]bool{}
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	require.NoError(t, sc.Err())
	// A line cut by the kill (no newline) is only ever an intent or an ack
	// whose Put did return nil: treat a partial last line as absent.
	out := soakLog{allowed: map[string]map[string]bool{}}
	intents := 0
	for _, l := range lines {
		parts := strings.Fields(l)
		if len(parts) != 4 {
			continue
		}
		kind, token, key, op := parts[0], parts[1], parts[2], parts[3]
		switch kind {
		case "I":
			intents++
			pending[key] = append(pending[key], ev{token, op})
		case "A":
			out.acked++
			ackedTokens[token] = true
			state := ""
			if op == "put" {
				state = token
			}
			last[key] = state
			pending[key] = nil
		}
	}
	for key := range soakKeyset(pending, last) {
		allowed := map[string]bool{}
		if st, ok := last[key]; ok {
			allowed[st] = true
		} else {
			allowed[""] = true // never acknowledged: may never have been written
		}
		for _, e := range pending[key] {
			if e.op == "put" {
				allowed[e.token] = true
			} else {
				allowed[""] = true
			}
		}
		out.allowed[key] = allowed
	}
	out.inFlight = intents - len(ackedTokens)
	return out
}

func soakKeyset[A, B any](a map[string]A, b map[string]B) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// TestAcknowledgedWritesSurviveKill9 runs a writer process (this test
// binary, TestHelperSoakWriter) that does concurrent Puts and Deletes and
// logs each acknowledged one, SIGKILLs it at random moments (some during its
// Open, most while it writes) and starts it again, over and over. The broker
// and registry live in this process, so they outlive every kill. At the end
// the writer's own cache (reopened), a fresh full restore and the log agree:
// every key holds its last acknowledged state, or that of an operation that
// was in flight when the writer was killed.
func TestAcknowledgedWritesSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a writer process 24 times")
	}
	e := newEnv(t)
	dir := t.TempDir()
	// Create the topic first so that every writer finds it.
	first := e.open(filepath.Join(dir, "cache"), kvstore.Partitions(3))
	require.NoError(t, first.Close())

	const kills = 24
	rng := rand.New(rand.NewPCG(2026, 7))
	var duringOpen int
	began := time.Now()
	for i := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSoakWriter$", "-test.v=false")
		cmd.Env = append(os.Environ(),
			"COMPACTKV_SOAK_DIR="+dir, "COMPACTKV_SOAK_TOPIC="+e.topic,
			"COMPACTKV_SOAK_BROKERS="+strings.Join(e.seeds, ","),
			"COMPACTKV_SOAK_REGISTRY="+e.regURL)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		lines := make(chan string, 16)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		if i%5 == 4 {
			// Kill it during its Open (restore), at a random moment.
			duringOpen++
			time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond) // the kill moment is the point: no condition to await
		} else {
			// Kill it at a random moment while it writes.
			for line := range lines {
				require.False(t, strings.HasPrefix(line, "error:"), line)
				if line == "ready" {
					break
				}
			}
			time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond) // the kill moment is the point
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		for line := range lines {
			require.False(t, strings.HasPrefix(line, "error:"), line)
		}
	}
	took := time.Since(began)

	lg := readSoakLog(t, filepath.Join(dir, "acks.log"))
	require.Greater(t, lg.acked, 100, "the writer made progress")

	ctx := ctxT(t)
	own, err := kvstore.Open[User](ctx, e.topic, e.opts(filepath.Join(dir, "cache"))...)
	require.NoError(t, err)
	defer own.Close()
	fresh := e.open("")
	ownState, freshState := contents(t, own), contents(t, fresh)
	require.Equal(t, freshState, ownState, "the writer's cache equals a fresh restore (mode %s)", own.Stats().Restore.Mode)

	lost := 0
	for key, allowed := range lg.allowed {
		state := ""
		if u, ok := freshState[key]; ok {
			state = u.LastName
		}
		if !allowed[state] {
			lost++
			t.Errorf("key %q is %q, want one of %v", key, state, allowed)
		}
	}
	for key := range freshState {
		require.Contains(t, lg.allowed, key, "a key nobody wrote")
	}
	t.Logf("soak: %d kills (%d during Open) in %v, %d acknowledged writes, %d in flight at a kill, %d keys, %d live; lost: %d",
		kills, duringOpen, took.Round(time.Second), lg.acked, lg.inFlight, len(lg.allowed), len(freshState), lost)
	require.Zero(t, lost)
}
