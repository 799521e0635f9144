package kvstore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/kvstore"
	"github.com/compactkv/compactkv/testdata"
)

func TestOpenReportsEveryBadOptionAtOnce(t *testing.T) {
	good := []kvstore.Option{kvstore.Brokers("127.0.0.1:1"), kvstore.Registry("http://127.0.0.1:1"),
		kvstore.ValueSchema(testdata.UserV2Schema), kvstore.Dir(t.TempDir())}
	cases := []struct {
		name  string
		topic string
		opts  []kvstore.Option
		want  []string // each names one problem, in the order they are reported
	}{
		{"nothing required given", "t", nil,
			[]string{"no brokers (use Brokers)", "no schema registry URL (use Registry)", "no value schema (use ValueSchema)"}},
		{"one bad option", "t", append(good[:len(good):len(good)], kvstore.Partitions(-2)),
			[]string{"Partitions(-2)"}},
		{"partitioned-mode options without Group", "t", append(good[:len(good):len(good)],
			kvstore.Standbys(-1), kvstore.SessionTimeout(time.Second)),
			[]string{"SessionTimeout, Standbys need(s) Group", "Standbys(-1)", "SessionTimeout(1s)"}},
		{"Group without Advertise", "t", append(good[:len(good):len(good)], kvstore.Group("g")),
			[]string{`Group("g") needs Advertise`}},
		{"every option bad", "../escape", []kvstore.Option{
			kvstore.Registry("http://127.0.0.1:1"), kvstore.ValueSchema(" "), kvstore.Dir(""),
			kvstore.Partitions(0), kvstore.ReplicationFactor(0), kvstore.KeyPartitioner(kvstore.Partitioner(9)),
			kvstore.RestoreMemory(1024), kvstore.LockTimeout(0), kvstore.DeliveryTimeout(time.Millisecond),
			kvstore.CloseTimeout(-time.Second), kvstore.ProgressInterval(-time.Second),
			kvstore.OnPoison(kvstore.PoisonPolicy(7)), kvstore.Logger(nil),
		}, []string{
			`topic name "../escape"`,
			"no brokers (use Brokers)",
			"no value schema (use ValueSchema)",
			"empty cache directory (use Dir)",
			"Partitions(0)",
			"ReplicationFactor(0)",
			"KeyPartitioner(Partitioner(9))",
			"RestoreMemory(1024)",
			"LockTimeout(0s)",
			"DeliveryTimeout(1ms)",
			"CloseTimeout(-1s)",
			"ProgressInterval(-1s)",
			"OnPoison(PoisonPolicy(7))",
			"Logger(nil)",
		}},
		{"addresses, schema and topic configs that cannot work", "t", []kvstore.Option{
			kvstore.Brokers("localhost", ""), kvstore.Registry("ftp://x"), kvstore.ValueSchema("not json"),
			kvstore.Dir(t.TempDir()), kvstore.TopicConfig("cleanup.policy", "delete"),
			kvstore.SchemaCompatibility(sr.CompatibilityLevel(99)), nil, // a nil option sets nothing
		}, []string{
			`Brokers("localhost"): want host:port`,
			`Brokers(""): want host:port`,
			`Registry("ftp://x"): want an http:// or https:// URL`,
			"ValueSchema: serde: invalid Avro schema",
			`TopicConfig("cleanup.policy")`,
			"SchemaCompatibility(",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := kvstore.Open[User](ctx, c.topic, c.opts...)
			require.ErrorIs(t, err, kvstore.ErrBadConfig)
			var errs []error
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			} else {
				errs = []error{err}
			}
			require.Len(t, errs, len(c.want), "every problem, once each: %v", err)
			for i, w := range c.want {
				require.ErrorIs(t, errs[i], kvstore.ErrBadConfig, "problem %d", i)
				require.Contains(t, errs[i].Error(), w, "problem %d", i)
			}
		})
	}
}

// A problem in the options is reported before anything is dialled or
// created: Open neither waits for a broker nor makes the cache directory.
func TestBadOptionsFailOpenBeforeItDialsOrCreatesAnything(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "never")
	began := time.Now()
	_, err := kvstore.Open[User](context.Background(), "t", kvstore.Brokers("127.0.0.1:1"),
		kvstore.Registry("http://127.0.0.1:1"), kvstore.ValueSchema(testdata.UserV2Schema),
		kvstore.Dir(dir), kvstore.Partitions(0))
	require.ErrorIs(t, err, kvstore.ErrBadConfig)
	require.Less(t, time.Since(began), time.Second)
	require.NoDirExists(t, dir)
}
