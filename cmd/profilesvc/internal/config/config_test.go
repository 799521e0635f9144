package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeDotEnv(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), ".env")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

func TestDefaultsAreEmbeddedMode(t *testing.T) {
	c, err := Load(nil, envOf(nil), filepath.Join(t.TempDir(), "missing.env"), io.Discard)
	require.NoError(t, err)
	require.Equal(t, Config{
		HTTPAddr:             "127.0.0.1:8080",
		Topic:                "user-profiles",
		Partitions:           1,
		DataDir:              "./data",
		EmbeddedKafkaAddr:    "127.0.0.1:19092",
		EmbeddedRegistryAddr: "127.0.0.1:18081",
		CompactInterval:      30 * time.Second,
		ShutdownTimeout:      15 * time.Second,
		Partitioner:          "murmur2",
		ReadWait:             5 * time.Second,
		SessionTimeout:       45 * time.Second,
	}, c)
	require.True(t, c.Embedded())
	require.False(t, c.Partitioned())
}

func TestFlagsWinOverEnvironmentWhichWinsOverDotEnv(t *testing.T) {
	dotenv := writeDotEnv(t, `
# every setting from the file
HTTP_ADDR=127.0.0.1:1000
PROFILE_TOPIC="from-file"
DATA_DIR='/file/dir'   # trailing comment
export EMBEDDED_KAFKA_ADDR=127.0.0.1:3000 # comment
EMBEDDED_COMPACT_INTERVAL=5s
`)
	env := envOf(map[string]string{
		"HTTP_ADDR":     "127.0.0.1:2000",
		"PROFILE_TOPIC": "from-env",
	})
	c, err := Load([]string{"--http-addr", "127.0.0.1:9999"}, env, dotenv, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9999", c.HTTPAddr, "flag over env over file")
	require.Equal(t, "from-env", c.Topic, "env over file")
	require.Equal(t, "/file/dir", c.DataDir, "file over default")
	require.Equal(t, "127.0.0.1:3000", c.EmbeddedKafkaAddr)
	require.Equal(t, 5*time.Second, c.CompactInterval)
	require.Equal(t, "127.0.0.1:18081", c.EmbeddedRegistryAddr, "default")
}

func TestMaxStalenessIsOffByDefaultAndSetLikeTheOthers(t *testing.T) {
	nofile := filepath.Join(t.TempDir(), ".env")
	c, err := Load(nil, envOf(nil), nofile, io.Discard)
	require.NoError(t, err)
	require.Zero(t, c.MaxStaleness)
	c, err = Load(nil, envOf(nil), writeDotEnv(t, "MAX_STALENESS=2m\n"), io.Discard)
	require.NoError(t, err)
	require.Equal(t, 2*time.Minute, c.MaxStaleness)
	c, err = Load([]string{"--max-staleness", "30s"}, envOf(map[string]string{"MAX_STALENESS": "1m"}), nofile, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 30*time.Second, c.MaxStaleness)
}

func TestReadWaitDefaultsTo5sAndIsSetLikeTheOthers(t *testing.T) {
	nofile := filepath.Join(t.TempDir(), ".env")
	c, err := Load(nil, envOf(nil), writeDotEnv(t, "READ_WAIT=750ms\n"), io.Discard)
	require.NoError(t, err)
	require.Equal(t, 750*time.Millisecond, c.ReadWait)
	c, err = Load(nil, envOf(map[string]string{"READ_WAIT": "2s"}), nofile, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, c.ReadWait)
	c, err = Load([]string{"--read-wait", "200ms"}, envOf(map[string]string{"READ_WAIT": "2s"}), nofile, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 200*time.Millisecond, c.ReadWait)

	for _, bad := range []string{"0", "31s", "soon", "-1s"} {
		_, err := Load(nil, envOf(map[string]string{"READ_WAIT": bad}), nofile, io.Discard)
		require.ErrorContains(t, err, "READ_WAIT: ", bad)
	}
	_, err = Load([]string{"--read-wait", "1m"}, envOf(nil), nofile, io.Discard)
	require.ErrorContains(t, err, "--read-wait: 1m0s is outside 1ms to 30s")
}

// A bound finer than the store's view of its freshness would flap /readyz.
func TestMaxStalenessBelowTheFloorIsRefused(t *testing.T) {
	nofile := filepath.Join(t.TempDir(), ".env")
	_, err := Load([]string{"--max-staleness", "500ms"}, envOf(nil), nofile, io.Discard)
	require.ErrorContains(t, err, "--max-staleness")
	require.ErrorContains(t, err, "below 3s")
	c, err := Load([]string{"--max-staleness", "3s"}, envOf(nil), nofile, io.Discard)
	require.NoError(t, err)
	require.Equal(t, MinMaxStaleness, c.MaxStaleness)
}

func TestEmptyEnvironmentVariableStillWins(t *testing.T) {
	dotenv := writeDotEnv(t, "KAFKA_BOOTSTRAP_SERVERS=k:9092\nSCHEMA_REGISTRY_URL=http://r:8081\n")
	c, err := Load(nil, envOf(map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "", "SCHEMA_REGISTRY_URL": ""}), dotenv, io.Discard)
	require.NoError(t, err)
	require.True(t, c.Embedded())
}

func TestRealModeNeedsBothBrokersAndRegistry(t *testing.T) {
	nofile := filepath.Join(t.TempDir(), ".env")
	c, err := Load([]string{"--brokers", " a:9092, b:9092 ,", "--registry", "http://r:8081"}, envOf(nil), nofile, io.Discard)
	require.NoError(t, err)
	require.False(t, c.Embedded())
	require.Equal(t, []string{"a:9092", "b:9092"}, c.Brokers)

	_, err = Load(nil, envOf(map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "a:9092"}), nofile, io.Discard)
	require.ErrorContains(t, err, "KAFKA_BOOTSTRAP_SERVERS is set, so --registry must be too")
	_, err = Load([]string{"--registry", "http://r:8081"}, envOf(nil), nofile, io.Discard)
	require.ErrorContains(t, err, "--registry is set without --brokers")
}

func TestBadValuesNameTheirSource(t *testing.T) {
	nofile := filepath.Join(t.TempDir(), ".env")
	_, err := Load(nil, envOf(map[string]string{"EMBEDDED_COMPACT_INTERVAL": "soon"}), nofile, io.Discard)
	require.ErrorContains(t, err, "EMBEDDED_COMPACT_INTERVAL")
	_, err = Load(nil, envOf(map[string]string{"MAX_STALENESS": "-1s"}), nofile, io.Discard)
	require.ErrorContains(t, err, `MAX_STALENESS: "-1s" is not a non-negative duration`)
	_, err = Load([]string{"--topic", " "}, envOf(nil), nofile, io.Discard)
	require.ErrorContains(t, err, "--topic: must not be empty")
	_, err = Load(nil, envOf(map[string]string{"PARTITIONER": "random"}), nofile, io.Discard)
	require.ErrorContains(t, err, `PARTITIONER: "random" is not a partitioner`)
	c, err := Load([]string{"--partitioner", "CRC32"}, envOf(nil), nofile, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "crc32", c.Partitioner)
	_, err = Load(nil, envOf(map[string]string{"PROFILE_TOPIC_PARTITIONS": "0"}), nofile, io.Discard)
	require.ErrorContains(t, err, `PROFILE_TOPIC_PARTITIONS: "0" is not a partition count from 1 to 10000`)
	c, err = Load([]string{"--partitions", "12"}, envOf(nil), nofile, io.Discard)
	require.NoError(t, err)
	require.Equal(t, int32(12), c.Partitions)
	_, err = Load([]string{"extra"}, envOf(nil), nofile, io.Discard)
	require.ErrorContains(t, err, `unexpected argument "extra"`)
	var usage strings.Builder
	_, err = Load([]string{"--help"}, envOf(nil), nofile, &usage)
	require.True(t, errors.Is(err, flag.ErrHelp))
	require.Contains(t, usage.String(), "$KAFKA_BOOTSTRAP_SERVERS")
}

func TestGroupTurnsPartitionedModeOnWithItsSettings(t *testing.T) {
	nofile := filepath.Join(t.TempDir(), ".env")
	real := []string{"--brokers", "k:9092", "--registry", "http://r:8081"}
	c, err := Load(append(real, "--group", "profiles"), envOf(nil), nofile, io.Discard)
	require.NoError(t, err)
	require.True(t, c.Partitioned())
	require.Equal(t, "profiles", c.Group)
	require.Empty(t, c.AdvertiseAddr, "default: the address --http-addr listens on")
	require.Zero(t, c.Standbys)
	require.Equal(t, DefaultSessionTimeout, c.SessionTimeout)

	c, err = Load(append(real, "--standbys", "1"), envOf(map[string]string{
		"PROFILE_GROUP": "g", "ADVERTISE_ADDR": "10.0.0.5:8080", "SESSION_TIMEOUT": "6s",
	}), writeDotEnv(t, "STANDBYS=2\nSESSION_TIMEOUT=1m\n"), io.Discard)
	require.NoError(t, err)
	require.Equal(t, Config{
		HTTPAddr: "127.0.0.1:8080", Brokers: []string{"k:9092"}, Registry: "http://r:8081",
		Topic: "user-profiles", Partitions: 1, DataDir: "./data", EmbeddedKafkaAddr: "127.0.0.1:19092", EmbeddedRegistryAddr: "127.0.0.1:18081",
		CompactInterval: 30 * time.Second, ShutdownTimeout: 15 * time.Second, Partitioner: "murmur2", ReadWait: 5 * time.Second,
		Group: "g", AdvertiseAddr: "10.0.0.5:8080", Standbys: 1, SessionTimeout: 6 * time.Second,
	}, c)
}

func TestGroupSettingsAreRefusedWhereTheyMeanNothing(t *testing.T) {
	nofile := filepath.Join(t.TempDir(), ".env")
	real := []string{"--brokers", "k:9092", "--registry", "http://r:8081"}
	for _, c := range []struct {
		args []string
		env  map[string]string
		says string
	}{
		{[]string{"--group", "g"}, nil, "--group needs --brokers (and --registry): the members of a group share one cluster, and embedded mode's in-process broker listens on one fixed port"},
		{nil, map[string]string{"PROFILE_GROUP": "g"}, "PROFILE_GROUP needs --brokers"},
		{append(real, "--standbys", "1"), nil, "--standbys is set without --group"},
		{append(real, "--advertise-addr", "h:1"), nil, "--advertise-addr is set without --group"},
		{real, map[string]string{"SESSION_TIMEOUT": "10s"}, "SESSION_TIMEOUT is set without --group"},
		{append(real, "--group", "g", "--session-timeout", "5s"), nil, "--session-timeout: 5s is below 6s"},
		{append(real, "--group", "g", "--standbys", "-1"), nil, `--standbys: "-1" is not a whole number of 0 or more`},
		{append(real, "--group", "g", "--standbys", "two"), nil, `--standbys: "two" is not a whole number`},
		{append(real, "--group", "g", "--advertise-addr", "0.0.0.0:8080"), nil, "--advertise-addr: \"0.0.0.0:8080\" names no host the other members can reach"},
		{append(real, "--group", "g", "--advertise-addr", ":8080"), nil, "names no host"},
		{append(real, "--group", "g", "--advertise-addr", "[::]:8080"), nil, "names no host"},
		{append(real, "--group", "g", "--advertise-addr", "host"), nil, `--advertise-addr: "host" is not host:port`},
		{append(real, "--group", "g", "--advertise-addr", "host:0"), nil, "port must be from 1 to 65535"},
	} {
		_, err := Load(c.args, envOf(c.env), nofile, io.Discard)
		require.ErrorContains(t, err, c.says, "%v %v", c.args, c.env)
	}
	require.NoError(t, CheckAdvertise("localhost:8080"))
	require.NoError(t, CheckAdvertise("[fd00::5]:8080"))
	require.Error(t, CheckAdvertise("127.0.0.1:0"), "port 0 is not where the server listens")
}

func TestParseDotEnv(t *testing.T) {
	got, err := parseDotEnv(".env", []byte("\uFEFFA=1\n\n  # comment\nB = two words # c\nC=\"x \\\"q\\\" #not a comment\\n\"\nD='$raw \\n'\nexport E=\nF=a#b\n"))
	require.NoError(t, err)
	require.Equal(t, map[string]string{
		"A": "1", "B": "two words", "C": "x \"q\" #not a comment\n", "D": `$raw \n`, "E": "", "F": "a#b",
	}, got)

	for _, bad := range []string{"NOEQUALS", "1A=x", "A B=x", "A=\"open", "A='x' y"} {
		_, err := parseDotEnv(".env", []byte("OK=1\n"+bad+"\n"))
		require.ErrorContains(t, err, ".env:2:", bad)
	}
}

// .env.example, used as a .env file as it stands, configures the defaults.
func TestEnvExampleGivesTheDefaults(t *testing.T) {
	example := filepath.Join("..", "..", "..", "..", ".env.example")
	vars, err := ReadDotEnv(example)
	require.NoError(t, err)
	for _, s := range settings {
		require.Contains(t, vars, s.env, ".env.example lists every setting")
	}
	fromFile, err := Load(nil, envOf(nil), example, io.Discard)
	require.NoError(t, err)
	defaults, err := Load(nil, envOf(nil), filepath.Join(t.TempDir(), ".env"), io.Discard)
	require.NoError(t, err)
	require.Equal(t, defaults, fromFile)
}
