package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/config"
	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

// binary is the profilesvc built once for every test of this package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "profilesvc-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "profilesvc")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// settingVars are the variables profilesvc reads; the parent's are dropped
// so that the test decides them all.
var settingVars = []string{"HTTP_ADDR", "KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "PROFILE_TOPIC",
	"DATA_DIR", "EMBEDDED_KAFKA_ADDR", "EMBEDDED_REGISTRY_ADDR", "EMBEDDED_COMPACT_INTERVAL", "SHUTDOWN_TIMEOUT",
	"MAX_STALENESS", "PARTITIONER", "READ_WAIT", "PROFILE_TOPIC_PARTITIONS", "PROFILE_GROUP", "ADVERTISE_ADDR", "STANDBYS", "SESSION_TIMEOUT"}

func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !contains(settingVars, k) {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// logFile is where a service writes its output: a file, which the process
// (or run, in this process) writes and the test reads at the same time.
type logFile struct{ *os.File }

func newLogFile(t *testing.T) logFile {
	f, err := os.Create(filepath.Join(t.TempDir(), "profilesvc.log"))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return logFile{f}
}

// String returns all the service wrote so far.
func (l logFile) String() string {
	b, _ := os.ReadFile(l.Name())
	return string(b)
}

// svc is one running profilesvc: a process (start), or run in this process
// (runInProcess).
type svc struct {
	t      *testing.T
	cmd    *exec.Cmd          // the process; nil in this process
	cancel context.CancelFunc // run's signal, in this process
	base   string
	log    logFile
	exited chan struct{}
	err    error // cmd.Wait's or run's, once exited is closed
}

// start runs the binary in workDir with args and env, and waits until
// /readyz answers 200. The service listens where args and env say; give it
// port 0 (a port the kernel picks, held from the moment it is picked) and
// read the address from its log (logged), never a port number found free
// beforehand, which another program may take before the service listens.
func start(t *testing.T, workDir string, args, env []string) *svc {
	t.Helper()
	s := &svc{t: t, log: newLogFile(t), exited: make(chan struct{})}
	s.cmd = exec.Command(binary, args...)
	s.cmd.Dir = workDir
	s.cmd.Env = childEnv(env...)
	s.cmd.Stdout, s.cmd.Stderr = s.log.File, s.log.File
	require.NoError(t, s.cmd.Start())
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	s.endAtCleanup(func() { _ = s.cmd.Process.Kill() })
	s.waitReady()
	return s
}

func (s *svc) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			s.t.Fatalf("profilesvc exited before it was ready: %v\n%s", s.err, s.log.String())
		default:
		}
		if s.base == "" {
			s.base = s.logged("http") // "" until the service has logged where it listens
		} else if code, body := s.readyz(); code != 0 {
			require.Equal(s.t, code == http.StatusOK, body["ready"], "/readyz says in JSON whether it is ready")
			if code == http.StatusOK {
				return
			}
			require.Equal(s.t, http.StatusServiceUnavailable, code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("profilesvc not ready within 30s\n%s", s.log.String())
}

// startLine is the line the service logs once it listens: its addresses.
var startLine = regexp.MustCompile(`msg="profilesvc starting".*`)

// logged returns the value of key (http, kafka, schema_registry) in the
// service's "profilesvc starting" line, "" until it has logged it.
func (s *svc) logged(key string) string {
	line := startLine.FindString(s.log.String())
	m := regexp.MustCompile(` ` + key + `=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	return m[1]
}

// runInProcess runs the service (run, as main does) in this process on a
// listener of its own, with settings from args alone (no environment, no
// .env file), and waits until /readyz answers 200. terminate ends it as
// SIGTERM does.
func runInProcess(t *testing.T, args ...string) *svc {
	t.Helper()
	cfg, err := config.Load(args, func(string) (string, bool) { return "", false },
		filepath.Join(t.TempDir(), ".env"), io.Discard)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	s := &svc{t: t, cancel: cancel, base: "http://" + ln.Addr().String(), log: newLogFile(t), exited: make(chan struct{})}
	go func() {
		s.err = run(ctx, cfg, ln, slog.New(slog.NewTextHandler(s.log, nil)))
		close(s.exited)
	}()
	s.endAtCleanup(cancel)
	s.waitReady()
	return s
}

// endAtCleanup ends the service with end when the test ends, if it still
// runs, and logs its output if the test failed.
func (s *svc) endAtCleanup(end func()) {
	s.t.Cleanup(func() {
		end()
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			s.t.Errorf("profilesvc did not end within 30s")
		}
		if s.t.Failed() {
			s.t.Logf("profilesvc output:\n%s", s.log.String())
		}
	})
}

// terminate sends SIGTERM, or does what it does to run in this process.
func (s *svc) terminate() {
	s.t.Helper()
	if s.cmd == nil {
		s.cancel()
		return
	}
	require.NoError(s.t, s.cmd.Process.Signal(syscall.SIGTERM))
}

// stop sends SIGTERM and requires exit code 0.
func (s *svc) stop() {
	s.t.Helper()
	s.terminate()
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("profilesvc did not exit within 30s of SIGTERM\n%s", s.log.String())
	}
	require.NoError(s.t, s.err, "exit status after SIGTERM\n%s", s.log.String())
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body %q", r.body)
	return m
}

func (s *svc) do(method, path string, body []byte) response {
	s.t.Helper()
	r, err := s.try(method, path, body)
	require.NoError(s.t, err)
	return r
}

// try is do for other goroutines than the test's, and for calls that may
// fail: it returns the error.
func (s *svc) try(method, path string, body []byte) (response, error) {
	return s.tryWith(method, path, body, nil)
}

// tryWith is try with extra request headers.
func (s *svc) tryWith(method, path string, body []byte, header http.Header) (response, error) {
	req, err := http.NewRequest(method, s.base+path, bytes.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}, err
}

// metric returns the value of one sample line of /metrics, 0 if absent.
func (s *svc) metric(name string) float64 {
	s.t.Helper()
	r := s.do("GET", "/metrics", nil)
	require.Equal(s.t, 200, r.code)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(r.body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(s.t, err)
	return v
}

func endOffsets(t *testing.T, brokers, topic string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lo, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	require.NoError(t, err)
	out := map[int32]int64{}
	lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

const (
	putCount = `profilesvc_store_operation_duration_seconds_count{op="put"}`
	put400s  = `profilesvc_http_requests_total{code="400",route="PUT /profiles/{id...}"}`
)

func TestServiceEndToEnd(t *testing.T) {
	work := t.TempDir()
	// Settings from all three places, each overriding the next: the flag
	// beats the .env's HTTP_ADDR, the environment's embedded addresses beat
	// the .env's and the defaults (127.0.0.1:19092 and :18081), and the .env
	// file gives the topic and the data directory. Every address has port 0:
	// the log says which ports the service got.
	require.NoError(t, os.WriteFile(filepath.Join(work, ".env"), []byte(
		"# profilesvc test settings\nHTTP_ADDR=127.0.0.1:1 # overridden by the flag\nPROFILE_TOPIC=\"people\"\nDATA_DIR=state\nEMBEDDED_KAFKA_ADDR=127.0.0.1:1\n"), 0o644))
	args := []string{"--http-addr", "127.0.0.1:0"}
	env := []string{"EMBEDDED_KAFKA_ADDR=127.0.0.1:0", "EMBEDDED_REGISTRY_ADDR=127.0.0.1:0"}
	kernelPicked := func(addr, notThis string) {
		t.Helper()
		require.Regexp(t, `^127\.0\.0\.1:\d+$`, addr)
		require.NotEqual(t, "127.0.0.1:1", addr, "from the .env file")
		require.NotEqual(t, notThis, addr, "the default")
	}

	s := start(t, work, args, env)
	require.Contains(t, s.log.String(), "mode=embedded")
	kafkaAddr := s.logged("kafka")
	kernelPicked(kafkaAddr, "127.0.0.1:19092")
	kernelPicked(strings.TrimPrefix(s.logged("schema_registry"), "http://"), "127.0.0.1:18081")
	kernelPicked(strings.TrimPrefix(s.base, "http://"), "127.0.0.1:8080")

	rd := s.do("GET", "/readyz", nil).json(t)
	require.Equal(t, "full", rd["mode"])
	require.Equal(t, "no cache", rd["reason"])
	h := s.do("GET", "/healthz", nil)
	require.Equal(t, 200, h.code)
	require.Equal(t, true, h.json(t)["ready"])

	// put, get, update
	put := func(id, body string) response { return s.do("PUT", "/profiles/"+id, []byte(body)) }
	r := put("user-1", `{"first_name":"Ada","last_name":"Lovelace","age":36,"email":"ada@example.com"}`)
	require.Equal(t, 200, r.code, "%s", r.body)
	require.JSONEq(t, `{"id":"user-1","first_name":"Ada","last_name":"Lovelace","age":36,"email":"ada@example.com"}`, string(r.body))
	require.Equal(t, 200, put("user-2", `{"first_name":"Grace","last_name":"Hopper","age":85}`).code)
	require.Equal(t, 200, put("user-3", `{"first_name":"Alan","last_name":"Turing","age":41,"email":null}`).code)
	require.Equal(t, 200, put("team%2Fz%C3%BC", `{"first_name":"Zu","last_name":"Slash","age":-1}`).code)
	longID := strings.Repeat("x", 256)
	require.Equal(t, 200, put(longID, `{"first_name":"Max","last_name":"Len","age":2147483647}`).code)
	r = put("user-1", `{"first_name":"Ada","last_name":"King","age":37,"email":"ada@example.com"}`)
	require.Equal(t, 200, r.code)

	r = s.do("GET", "/profiles/user-1", nil)
	require.Equal(t, 200, r.code)
	require.JSONEq(t, `{"id":"user-1","first_name":"Ada","last_name":"King","age":37,"email":"ada@example.com"}`, string(r.body))
	r = s.do("GET", "/profiles/team%2Fz%C3%BC", nil)
	require.Equal(t, 200, r.code)
	require.Equal(t, "team/zü", r.json(t)["id"])
	r = s.do("GET", "/profiles/nobody", nil)
	require.Equal(t, 404, r.code)
	require.Contains(t, r.json(t)["error"], "nobody")

	// delete: 204 with a tombstone, then 404
	require.Equal(t, 200, put("user-4", `{"first_name":"Temp","last_name":"Orary","age":1}`).code)
	r = s.do("DELETE", "/profiles/user-4", nil)
	require.Equal(t, 204, r.code)
	require.Empty(t, r.body)
	require.Equal(t, 404, s.do("DELETE", "/profiles/user-4", nil).code)
	require.Equal(t, 404, s.do("GET", "/profiles/user-4", nil).code)

	// list: key order, prefix, cursor pagination
	type page struct {
		Items []map[string]any `json:"items"`
		Next  string           `json:"next"`
	}
	list := func(query string) page {
		t.Helper()
		r := s.do("GET", "/profiles"+query, nil)
		require.Equal(t, 200, r.code, "%s", r.body)
		var p page
		require.NoError(t, json.Unmarshal(r.body, &p))
		return p
	}
	ids := func(p page) []string {
		var out []string
		for _, it := range p.Items {
			out = append(out, it["id"].(string))
		}
		return out
	}
	all := list("")
	require.Equal(t, []string{"team/zü", "user-1", "user-2", "user-3", longID}, ids(all))
	require.Empty(t, all.Next)
	require.Nil(t, all.Items[2]["email"], "email absent on PUT reads back null")
	p1 := list("?prefix=user-&limit=2")
	require.Equal(t, []string{"user-1", "user-2"}, ids(p1))
	require.Equal(t, "user-2", p1.Next)
	p2 := list("?prefix=user-&limit=2&after=" + p1.Next)
	require.Equal(t, []string{"user-3"}, ids(p2))
	require.Empty(t, p2.Next)
	require.Empty(t, list("?prefix=zzz").Items)
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=ten", "?limit=-1", "?limit="} {
		r := s.do("GET", "/profiles"+q, nil)
		require.Equal(t, 400, r.code, q)
		require.Equal(t, "limit", r.json(t)["field"], q)
	}

	// Bad input: 400 naming the field, and nothing produced.
	offsetsBefore := endOffsets(t, kafkaAddr, "people")
	putsBefore := s.metric(putCount)
	require.Positive(t, putsBefore)
	put400sBefore := s.metric(put400s)
	badPuts := 0
	huge := `{"first_name":"` + strings.Repeat("a", 1<<20) + `","last_name":"B","age":1}`
	for _, c := range []struct {
		name, method, path, body, field string
	}{
		{"malformed JSON", "PUT", "/profiles/bad", `{"first_name":"A",`, "body"},
		{"not JSON", "PUT", "/profiles/bad", `first_name=A`, "body"},
		{"empty body", "PUT", "/profiles/bad", ``, "body"},
		{"array body", "PUT", "/profiles/bad", `[]`, "body"},
		{"two objects", "PUT", "/profiles/bad", `{"first_name":"A","last_name":"B","age":1}{}`, "body"},
		{"unknown field", "PUT", "/profiles/bad", `{"first_name":"A","last_name":"B","age":1,"nickname":"x"}`, "nickname"},
		{"wrong type first_name", "PUT", "/profiles/bad", `{"first_name":5,"last_name":"B","age":1}`, "first_name"},
		{"wrong type last_name", "PUT", "/profiles/bad", `{"first_name":"A","last_name":null,"age":1}`, "last_name"},
		{"wrong type age", "PUT", "/profiles/bad", `{"first_name":"A","last_name":"B","age":"36"}`, "age"},
		{"fractional age", "PUT", "/profiles/bad", `{"first_name":"A","last_name":"B","age":1.5}`, "age"},
		{"wrong type email", "PUT", "/profiles/bad", `{"first_name":"A","last_name":"B","age":1,"email":5}`, "email"},
		{"missing first_name", "PUT", "/profiles/bad", `{"last_name":"B","age":1}`, "first_name"},
		{"missing last_name", "PUT", "/profiles/bad", `{"first_name":"A","age":1}`, "last_name"},
		{"missing age", "PUT", "/profiles/bad", `{"first_name":"A","last_name":"B"}`, "age"},
		{"age above int32", "PUT", "/profiles/bad", `{"first_name":"A","last_name":"B","age":2147483648}`, "age"},
		{"age below int32", "PUT", "/profiles/bad", `{"first_name":"A","last_name":"B","age":-2147483649}`, "age"},
		{"empty id", "PUT", "/profiles/", `{"first_name":"A","last_name":"B","age":1}`, "id"},
		{"id over 256 bytes", "PUT", "/profiles/" + longID + "y", `{"first_name":"A","last_name":"B","age":1}`, "id"},
		{"id over 256 bytes on GET", "GET", "/profiles/" + longID + "y", ``, "id"},
		{"id over 256 bytes on DELETE", "DELETE", "/profiles/" + longID + "y", ``, "id"},
		{"empty id on DELETE", "DELETE", "/profiles/", ``, "id"},
		{"body over 1 MiB", "PUT", "/profiles/bad", huge, "body"},
	} {
		if c.method == "PUT" {
			badPuts++
		}
		t.Run(c.name, func(t *testing.T) {
			r := s.do(c.method, c.path, []byte(c.body))
			require.Equal(t, 400, r.code, "%s", r.body)
			require.Equal(t, "application/json", r.header.Get("Content-Type"))
			body := r.json(t)
			require.Equal(t, c.field, body["field"])
			require.True(t, strings.HasPrefix(body["error"].(string), c.field+": "), "error %q names the field", body["error"])
		})
	}
	for _, c := range []struct{ method, path, allow string }{
		{"POST", "/profiles/user-1", "GET, HEAD, PUT, DELETE"},
		{"PATCH", "/profiles/user-1", "GET, HEAD, PUT, DELETE"},
		{"DELETE", "/profiles", "GET, HEAD"},
		{"POST", "/profiles", "GET, HEAD"},
		{"POST", "/readyz", "GET, HEAD"},
		{"PUT", "/metrics", "GET, HEAD"},
	} {
		r := s.do(c.method, c.path, []byte(`{}`))
		require.Equal(t, 405, r.code, "%s %s", c.method, c.path)
		require.Equal(t, c.allow, r.header.Get("Allow"))
		require.Contains(t, r.json(t)["error"], "not allowed")
	}
	require.Equal(t, offsetsBefore, endOffsets(t, kafkaAddr, "people"), "bad input produced records")
	require.Equal(t, putsBefore, s.metric(putCount), "bad input reached the store")
	require.Equal(t, all, list(""))

	// metrics
	require.Equal(t, put400sBefore+float64(badPuts), s.metric(put400s))
	require.Positive(t, s.metric(`profilesvc_store_operation_duration_seconds_count{op="get"}`))
	require.Positive(t, s.metric(`profilesvc_store_operation_duration_seconds_count{op="delete"}`))
	require.Positive(t, s.metric("profilesvc_cache_size_bytes"))
	require.Equal(t, 1.0, s.metric("profilesvc_ready"))
	require.Equal(t, 1.0, s.metric(`profilesvc_restore_info{mode="full",reason="no cache"}`))

	s.stop()
	require.FileExists(t, filepath.Join(work, "state", "cache", "people.db"))
	require.FileExists(t, filepath.Join(work, "state", "registry", "schemas.json"))
	require.DirExists(t, filepath.Join(work, "state", "kafka"))

	// Start again on the same data directory: the same profiles. This run
	// compacts often, to show the timer works after the broker reloaded.
	s = start(t, work, args, append(env, "EMBEDDED_COMPACT_INTERVAL=50ms"))
	kafkaAddr = s.logged("kafka")
	rd = s.do("GET", "/readyz", nil).json(t)
	t.Logf("/readyz after the restart: %v", rd)
	if rd["mode"] != "delta" {
		require.Equal(t, "full", rd["mode"])
		require.NotEmpty(t, rd["reason"], "a full restore says why")
	}
	require.Contains(t, rd, "restored_records")
	require.Equal(t, all, list(""))
	require.Equal(t, 404, s.do("GET", "/profiles/user-4", nil).code, "the tombstone holds")

	// Two versions of c-1, then another record (kfake never compacts the
	// last batch): the compaction timer leaves one c-1.
	for _, id := range []string{"c-1", "c-1", "c-2"} {
		require.Equal(t, 200, put(id, `{"first_name":"C","last_name":"D","age":5}`).code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for keyCounts(t, kafkaAddr, "people")["c-1"] != 1 {
		require.True(t, time.Now().Before(deadline), "topic not compacted within 10s: %v", keyCounts(t, kafkaAddr, "people"))
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, 1, keyCounts(t, kafkaAddr, "people")["user-1"], "compacted at start too")
	s.stop()
}

// keyCounts reads partition 0 of topic from its start to its end and counts
// the records of each key.
func keyCounts(t *testing.T, brokers, topic string) map[string]int {
	t.Helper()
	end := endOffsets(t, brokers, topic)[0]
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]int{}
	for {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err())
		for _, e := range fs.Errors() {
			require.NoError(t, e.Err)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			out[string(r.Key)]++
			done = done || r.Offset >= end-1
		})
		if done {
			return out
		}
	}
}

// With --brokers and --registry the service uses an existing cluster, and
// reads records written with the seed's original schema (no email) with
// email null.
func TestServiceOnExistingClusterReadsRecordsOfTheOriginalSchema(t *testing.T) {
	c, err := embedded.Start()
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old, err := kvstore.Open[testdata.UserV1](ctx, "legacy", kvstore.Brokers(c.Brokers()...),
		kvstore.Registry(c.RegistryURL()), kvstore.ValueSchema(testdata.UserV1Schema), kvstore.Dir(t.TempDir()))
	require.NoError(t, err)
	_, err = old.Put(ctx, "old-1", testdata.UserV1{FirstName: "Edsger", LastName: "Dijkstra", Age: 72})
	require.NoError(t, err)
	require.NoError(t, old.Close())

	work := t.TempDir()
	s := start(t, work, []string{"--http-addr", "127.0.0.1:0", "--topic", "legacy", "--data-dir", "d"},
		[]string{"KAFKA_BOOTSTRAP_SERVERS=" + c.Brokers()[0], "SCHEMA_REGISTRY_URL=" + c.RegistryURL()})
	require.Contains(t, s.log.String(), "mode=external")

	r := s.do("GET", "/profiles/old-1", nil)
	require.Equal(t, 200, r.code, "%s", r.body)
	require.JSONEq(t, `{"id":"old-1","first_name":"Edsger","last_name":"Dijkstra","age":72,"email":null}`, string(r.body))
	r = s.do("PUT", "/profiles/new-1", []byte(`{"first_name":"Barbara","last_name":"Liskov","age":86,"email":"bl@example.com"}`))
	require.Equal(t, 200, r.code, "%s", r.body)
	s.stop()
	require.FileExists(t, filepath.Join(work, "d", "cache", "legacy.db"))
	require.NoDirExists(t, filepath.Join(work, "d", "kafka"), "no embedded broker in external mode")
}

// readyz returns /readyz's status code and body, from any goroutine.
func (s *svc) readyz() (int, map[string]any) {
	r, err := s.try("GET", "/readyz", nil)
	if err != nil {
		return 0, nil
	}
	var body map[string]any
	if json.Unmarshal(r.body, &body) != nil {
		return 0, nil
	}
	return r.code, body
}

// A record the store can never serve stops the follower (the default
// poison policy is to fail): /readyz answers 503 naming the topic, the
// partition, the record's offset and the cause, and the cache is still
// served.
func TestReadyzNamesAStoppedFollowerAndReadsGoOn(t *testing.T) {
	c, err := embedded.Start()
	require.NoError(t, err)
	t.Cleanup(c.Close)
	s := runInProcess(t, "--brokers", c.Brokers()[0], "--registry", c.RegistryURL(),
		"--topic", "people", "--data-dir", t.TempDir())

	r := s.do("PUT", "/profiles/user-1", []byte(`{"first_name":"Ada","last_name":"Lovelace","age":36}`))
	require.Equal(t, 200, r.code, "%s", r.body)
	poisonAt := endOffsets(t, c.Brokers()[0], "people")[0]
	require.Eventually(t, func() bool {
		_, body := s.readyz()
		ps, _ := body["partition_stats"].([]any)
		return len(ps) == 1 && ps[0].(map[string]any)["applied"] == float64(poisonAt)
	}, 10*time.Second, 10*time.Millisecond, "the follower applies the PUT")

	// Raw bytes, no Confluent header, from a producer of another kind.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "people", Key: []byte("raw-1"), Value: []byte("not avro")}).FirstErr())

	var body map[string]any
	require.Eventually(t, func() bool {
		var code int
		code, body = s.readyz()
		return code == http.StatusServiceUnavailable
	}, 10*time.Second, 10*time.Millisecond, "/readyz turns 503")
	require.Equal(t, false, body["ready"])
	un := body["unready"].([]any)
	require.Len(t, un, 1)
	require.Subset(t, un[0], map[string]any{"topic": "people", "partition": 0.0, "offset": float64(poisonAt), "state": "stopped"})
	require.Contains(t, un[0].(map[string]any)["cause"],
		fmt.Sprintf(`poison record in topic "people" partition 0 offset %d: malformed value`, poisonAt))
	require.Subset(t, body["partition_stats"].([]any)[0], map[string]any{"state": "stopped", "applied": float64(poisonAt)})
	require.Equal(t, "full", body["mode"], "the restore's fields stay")

	r = s.do("GET", "/profiles/user-1", nil)
	require.Equal(t, 200, r.code, "reads are served while unready: %s", r.body)
	require.Equal(t, "Ada", r.json(t)["first_name"])
	require.Equal(t, 0.0, s.metric("profilesvc_ready"))
	require.Equal(t, 1.0, s.metric(`profilesvc_partition_state{partition="0",state="stopped"}`))
	require.Equal(t, 0.0, s.metric(`profilesvc_partition_state{partition="0",state="following"}`))
	s.stop()
}

// With the broker gone, --max-staleness turns /readyz 503 while reads go
// on, and a shutdown with a PUT waiting on the broker ends within
// --shutdown-timeout, the PUT answered 503.
func TestShutdownWithTheBrokerGoneEndsWithinShutdownTimeout(t *testing.T) {
	c, err := embedded.Start()
	require.NoError(t, err)
	closeCluster := sync.OnceFunc(c.Close)
	t.Cleanup(closeCluster)
	const shutdownTimeout, maxStaleness = 3 * time.Second, 3 * time.Second
	s := runInProcess(t, "--brokers", c.Brokers()[0], "--registry", c.RegistryURL(),
		"--topic", "people", "--data-dir", t.TempDir(),
		"--shutdown-timeout", shutdownTimeout.String(), "--max-staleness", maxStaleness.String())
	r := s.do("PUT", "/profiles/user-1", []byte(`{"first_name":"Ada","last_name":"Lovelace","age":36}`))
	require.Equal(t, 200, r.code, "%s", r.body)

	closeCluster()
	var body map[string]any
	require.Eventually(t, func() bool {
		var code int
		code, body = s.readyz()
		un, _ := body["unready"].([]any)
		return code == http.StatusServiceUnavailable && len(un) == 1 && un[0].(map[string]any)["state"] == "stalled"
	}, 30*time.Second, 20*time.Millisecond, "/readyz turns 503 once the staleness passes --max-staleness, the partition stalled")
	un := body["unready"].([]any)
	require.Len(t, un, 1)
	require.Subset(t, un[0], map[string]any{"topic": "people", "partition": 0.0, "state": "stalled"})
	require.Contains(t, un[0].(map[string]any)["cause"], "longer than the max staleness 3s")
	require.GreaterOrEqual(t, body["staleness_ms"], float64(maxStaleness.Milliseconds()))
	r = s.do("GET", "/profiles/user-1", nil)
	require.Equal(t, 200, r.code, "reads are served while unready: %s", r.body)

	// A PUT now waits on the broker (kvstore.DeliveryTimeout, 2m).
	putCode := make(chan int, 1)
	go func() {
		r, err := s.try("PUT", "/profiles/user-2", []byte(`{"first_name":"Grace","last_name":"Hopper","age":85}`))
		if err != nil {
			putCode <- -1
			return
		}
		putCode <- r.code
	}()
	require.Eventually(t, func() bool {
		r, err := s.try("GET", "/metrics", nil)
		return err == nil && bytes.Contains(r.body, []byte(`profilesvc_store_operations_in_flight{op="put"} 1`+"\n"))
	}, 10*time.Second, 10*time.Millisecond, "the PUT reaches the store")

	began := time.Now()
	s.terminate()
	const margin = time.Second
	select {
	case <-s.exited:
	case <-time.After(shutdownTimeout + margin):
		t.Fatalf("still shutting down %v after SIGTERM (--shutdown-timeout %v)", shutdownTimeout+margin, shutdownTimeout)
	}
	t.Logf("shut down in %v: %v", time.Since(began).Round(time.Millisecond), s.err)
	require.NoError(t, s.err, "a shutdown that kept its bound succeeded")
	require.Contains(t, s.log.String(), "cancelled the requests still in flight", "the log says it gave up on the PUT")
	select {
	case code := <-putCode:
		require.Equal(t, http.StatusServiceUnavailable, code, "the PUT in flight is answered, not cut off")
	case <-time.After(5 * time.Second):
		t.Fatal("the PUT in flight got no answer")
	}
}
