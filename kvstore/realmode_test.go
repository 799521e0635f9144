package kvstore_test

// Real-broker mode of the test suite.
//
// With COMPACTKV_BROKERS=host:port[,host:port...] set (scripts/kafka.sh up
// prints it), newEnv points every test at that cluster instead of the
// in-process kfake broker, under a topic name of its own (the test's name,
// sanitized, plus a random suffix) that is deleted when the test ends. The
// schema registry stays the in-process srfake one unless COMPACTKV_REGISTRY
// names another (a Confluent-compatible URL, e.g. Apicurio's .../apis/ccompat/v7).
//
// Tests that need the in-process broker's controls (Kafka().Compact(),
// DeleteRecords, Fault, ...) call e.requireKfake(why) and skip in real mode;
// tests that need the real log cleaner (realkafka_test.go) call
// requireRealKafka and skip otherwise.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// realBrokers returns the brokers named by COMPACTKV_BROKERS, or nil.
func realBrokers() []string {
	var out []string
	for _, b := range strings.Split(os.Getenv("COMPACTKV_BROKERS"), ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// useRealKafka switches e to the brokers of COMPACTKV_BROKERS (and the
// registry of COMPACTKV_REGISTRY) when they are set. It is a no-op otherwise.
func (e *env) useRealKafka() {
	e.t.Helper()
	if url := os.Getenv("COMPACTKV_REGISTRY"); url != "" {
		e.regURL, e.realRegistry = url, true
	}
	brokers := realBrokers()
	if len(brokers) == 0 {
		return
	}
	e.seeds, e.real = brokers, true
	e.topic = uniqueTopic(e.t)
	// Delete the topic when the test ends so that a long run does not leave
	// hundreds behind. Registered after newEnv's cleanups, so it runs before
	// them; stores opened later close before it (cleanups run LIFO).
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.seeds...))
		if err != nil {
			return
		}
		defer cl.Close()
		_, _ = kadm.NewClient(cl).DeleteTopics(ctx, e.topic)
	})
}

var topicUnsafe = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// uniqueTopic returns a legal Kafka topic name made of the test's name and a
// random suffix: at most 200 of [a-zA-Z0-9._-].
func uniqueTopic(t *testing.T) string {
	name := strings.Trim(topicUnsafe.ReplaceAllString(t.Name(), "-"), "-.")
	if len(name) > 180 {
		name = name[:180]
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "ckv-" + name + "-" + hex.EncodeToString(b[:])
}

// requireKfake skips the test on a real broker: it needs a control only the
// in-process broker has (why says which, e.g. "forced compaction").
func (e *env) requireKfake(why string) {
	e.t.Helper()
	if e.real {
		e.t.Skipf("needs the in-process broker (%s); COMPACTKV_BROKERS points at a real one", why)
	}
}

// requireSrfake skips the test when COMPACTKV_REGISTRY names an external
// registry: it inspects the in-process one (why says what for).
func (e *env) requireSrfake(why string) {
	e.t.Helper()
	if e.realRegistry {
		e.t.Skipf("needs the in-process schema registry (%s); COMPACTKV_REGISTRY points at another", why)
	}
}

// requireRealKafka skips the test unless COMPACTKV_BROKERS names a real
// broker: it needs Kafka's own log cleaner (why says what for).
func (e *env) requireRealKafka(why string) {
	e.t.Helper()
	if !e.real {
		e.t.Skipf("needs a real Kafka broker (%s): set COMPACTKV_BROKERS (scripts/kafka.sh up)", why)
	}
}

// TestUniqueTopicNamesAreLegal guards the naming of real-mode topics.
func TestUniqueTopicNamesAreLegal(t *testing.T) {
	t.Run("with spaces/and=odd chars ü", func(t *testing.T) {
		a, b := uniqueTopic(t), uniqueTopic(t)
		require.NotEqual(t, a, b)
		require.Regexp(t, `^ckv-TestUniqueTopicNamesAreLegal-with_spaces-and-odd_chars_-[0-9a-f]{12}$`, a)
		require.LessOrEqual(t, len(a), 249)
	})
}

// schemaVersions returns the versions registered under subject in the test's
// registry (in-process or external).
func (e *env) schemaVersions(subject string) []int {
	e.t.Helper()
	rc, err := sr.NewClient(sr.URLs(e.regURL))
	require.NoError(e.t, err)
	ss, err := rc.Schemas(ctxT(e.t), subject)
	require.NoError(e.t, err)
	var out []int
	for _, s := range ss {
		out = append(out, s.Version)
	}
	return out
}
