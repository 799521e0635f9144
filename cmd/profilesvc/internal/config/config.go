// Package config reads profilesvc's settings from command-line flags,
// environment variables and a .env file, in that order of precedence: a flag
// given on the command line wins over the environment, and the environment
// wins over the .env file.
package config

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is profilesvc's configuration.
type Config struct {
	// HTTPAddr is where the HTTP API listens. Default 127.0.0.1:8080.
	HTTPAddr string
	// Brokers are the Kafka bootstrap servers; empty means embedded mode.
	Brokers []string
	// Registry is the schema registry URL; required with Brokers.
	Registry string
	// Topic is the compacted topic profiles live in. Default user-profiles.
	Topic string
	// Partitions is the partition count profilesvc gives the topic when it
	// creates it; an existing topic keeps its own. Partitioned mode splits
	// the topic by partition, so it wants several. Default 1.
	Partitions int32
	// DataDir holds the cache and, in embedded mode, the broker's log and the
	// registry's schemas. Default ./data.
	DataDir string
	// EmbeddedKafkaAddr and EmbeddedRegistryAddr are where the in-process
	// broker and registry listen in embedded mode.
	EmbeddedKafkaAddr    string
	EmbeddedRegistryAddr string
	// CompactInterval is how often embedded mode compacts the in-process
	// broker's topics; 0 turns it off. Default 30s.
	CompactInterval time.Duration
	// ShutdownTimeout bounds a whole shutdown (SIGINT, SIGTERM), broker or
	// no broker: finishing the requests in flight, then closing the store.
	// Default 15s.
	ShutdownTimeout time.Duration
	// MaxStaleness makes /readyz answer 503 while some partition has not
	// been caught up with the topic for longer than this; 0 (the default)
	// turns the check off.
	MaxStaleness time.Duration
	// Partitioner is how keys map to partitions: "murmur2" (default; Java
	// clients, franz-go, librdkafka's murmur2_random) or "crc32"
	// (librdkafka's default consistent_random).
	Partitioner string
	// ReadWait bounds how long a request waits for this instance to apply
	// a Kvstore-Position token or to pass a ?consistent=true barrier
	// before it answers 504. Default 5s; from MinReadWait to MaxReadWait.
	ReadWait time.Duration
	// Group turns partitioned mode on: the instances that share it split
	// the topic's partitions through a Kafka consumer group of that name,
	// each serving its own and forwarding reads of the others' keys to
	// their owner. Needs Brokers. Default "": global mode, where every
	// instance holds the whole topic.
	Group string
	// AdvertiseAddr is the host:port the other members send this
	// instance's keys to (Group only). Default "": the address HTTPAddr
	// listens on, which must then name a host (not 0.0.0.0 or ::).
	AdvertiseAddr string
	// Standbys is how many other members keep each partition warm, so
	// that a failover promotes one instead of restoring from the topic
	// (Group only). Default 0.
	Standbys int
	// SessionTimeout is how long the group waits for a member that stopped
	// heartbeating (a crash, kill -9) before its partitions move: how long
	// its keys answer 503 (Group only). Default 45s; at least 6s.
	SessionTimeout time.Duration
}

// Partitioned reports whether Group is set: partitioned mode.
func (c Config) Partitioned() bool { return c.Group != "" }

// Embedded reports whether no broker was given, so profilesvc runs its own.
func (c Config) Embedded() bool { return len(c.Brokers) == 0 }

// setting is one flag and the environment variable that backs it.
type setting struct {
	flag, env, def, usage string
}

var settings = []setting{
	{"http-addr", "HTTP_ADDR", "127.0.0.1:8080", "address the HTTP API listens on"},
	{"brokers", "KAFKA_BOOTSTRAP_SERVERS", "", "Kafka bootstrap servers, comma separated (empty: run an in-process broker and registry)"},
	{"registry", "SCHEMA_REGISTRY_URL", "", "schema registry URL (required with --brokers)"},
	{"topic", "PROFILE_TOPIC", "user-profiles", "compacted topic that holds the profiles"},
	{"partitions", "PROFILE_TOPIC_PARTITIONS", "1", "partition count of the topic when profilesvc creates it (an existing topic keeps its own; --group splits the topic by partition)"},
	{"data-dir", "DATA_DIR", "./data", "directory for the cache (<data-dir>/cache) and, in embedded mode, <data-dir>/kafka and <data-dir>/registry"},
	{"embedded-kafka-addr", "EMBEDDED_KAFKA_ADDR", "127.0.0.1:19092", "listen address of the in-process Kafka broker (embedded mode)"},
	{"embedded-registry-addr", "EMBEDDED_REGISTRY_ADDR", "127.0.0.1:18081", "listen address of the in-process schema registry (embedded mode)"},
	{"compact-interval", "EMBEDDED_COMPACT_INTERVAL", "30s", "how often to compact the in-process broker's topics (embedded mode; 0 disables)"},
	{"shutdown-timeout", "SHUTDOWN_TIMEOUT", "15s", "bound on a whole shutdown: requests in flight, then closing the store (its last third, at most 5s)"},
	{"max-staleness", "MAX_STALENESS", "0", "/readyz answers 503 while a partition has not been caught up with the topic for longer than this (0 disables; at least 3s: the store checks about once a second)"},
	{"partitioner", "PARTITIONER", "murmur2", "how keys map to partitions: murmur2 (Java clients; librdkafka's murmur2_random) or crc32 (librdkafka's default)"},
	{"read-wait", "READ_WAIT", "5s", "how long a read with a Kvstore-Position header or ?consistent=true may wait for this instance to catch up before it answers 504 (1ms to 30s)"},
	{"group", "PROFILE_GROUP", "", "consumer group name: turns partitioned mode on (needs --brokers); the instances of a group split the topic's partitions and forward reads to each key's owner (empty: every instance holds the whole topic)"},
	{"advertise-addr", "ADVERTISE_ADDR", "", "host:port the other members of --group send this instance's keys to (empty: the address --http-addr listens on)"},
	{"standbys", "STANDBYS", "0", "how many other members of --group keep each partition warm for a fast failover"},
	{"session-timeout", "SESSION_TIMEOUT", "45s", "how long --group waits for a member that stopped heartbeating (kill -9) before its partitions move (at least 6s)"},
}

// Load parses args (without the program name) and fills in what they leave
// out from lookupEnv and then from the .env file at dotenvPath, which may be
// missing. A flag the command line does not set takes its variable from
// lookupEnv if that has it, else from the file, else the default. Load
// returns flag.ErrHelp for -h or --help after printing usage to out.
func Load(args []string, lookupEnv func(string) (string, bool), dotenvPath string, out io.Writer) (Config, error) {
	fs := flag.NewFlagSet("profilesvc", flag.ContinueOnError)
	fs.SetOutput(out)
	vals := map[string]*string{}
	for _, s := range settings {
		vals[s.flag] = fs.String(s.flag, s.def, s.usage+" ($"+s.env+")")
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: profilesvc [flags]\n\nSettings come from flags, then environment variables, then a .env file in the\nworking directory.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	dotenv, err := ReadDotEnv(dotenvPath)
	if err != nil {
		return Config{}, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	source := map[string]string{}
	for _, s := range settings {
		source[s.flag] = "--" + s.flag
		if set[s.flag] {
			continue
		}
		if v, ok := lookupEnv(s.env); ok {
			*vals[s.flag], source[s.flag] = v, s.env
		} else if v, ok := dotenv[s.env]; ok {
			*vals[s.flag], source[s.flag] = v, s.env+" (from "+dotenvPath+")"
		}
	}

	c := Config{
		HTTPAddr:             strings.TrimSpace(*vals["http-addr"]),
		Registry:             strings.TrimSpace(*vals["registry"]),
		Topic:                strings.TrimSpace(*vals["topic"]),
		DataDir:              strings.TrimSpace(*vals["data-dir"]),
		EmbeddedKafkaAddr:    strings.TrimSpace(*vals["embedded-kafka-addr"]),
		EmbeddedRegistryAddr: strings.TrimSpace(*vals["embedded-registry-addr"]),
		Partitioner:          strings.ToLower(strings.TrimSpace(*vals["partitioner"])),
		Group:                strings.TrimSpace(*vals["group"]),
		AdvertiseAddr:        strings.TrimSpace(*vals["advertise-addr"]),
	}
	partitions := strings.TrimSpace(*vals["partitions"])
	n, err := strconv.ParseInt(partitions, 10, 32)
	if err != nil || n < 1 || n > MaxPartitions {
		return Config{}, fmt.Errorf("%s: %q is not a partition count from 1 to %d", source["partitions"], partitions, MaxPartitions)
	}
	c.Partitions = int32(n)
	if c.Partitioner != "murmur2" && c.Partitioner != "crc32" {
		return Config{}, fmt.Errorf("%s: %q is not a partitioner: want murmur2 or crc32", source["partitioner"], c.Partitioner)
	}
	for _, b := range strings.Split(*vals["brokers"], ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.Brokers = append(c.Brokers, b)
		}
	}
	if c.CompactInterval, err = parseDuration(*vals["compact-interval"], source["compact-interval"]); err != nil {
		return Config{}, err
	}
	if c.ShutdownTimeout, err = parseDuration(*vals["shutdown-timeout"], source["shutdown-timeout"]); err != nil {
		return Config{}, err
	}
	if c.MaxStaleness, err = parseDuration(*vals["max-staleness"], source["max-staleness"]); err != nil {
		return Config{}, err
	}
	if c.MaxStaleness != 0 && c.MaxStaleness < MinMaxStaleness {
		return Config{}, fmt.Errorf("%s: %v is below %v: the store learns the topic's end offsets about once a second, so a smaller bound would turn /readyz on and off on a healthy broker (0 disables the check)",
			source["max-staleness"], c.MaxStaleness, MinMaxStaleness)
	}
	if c.ReadWait, err = parseDuration(*vals["read-wait"], source["read-wait"]); err != nil {
		return Config{}, err
	}
	if c.ReadWait < MinReadWait || c.ReadWait > MaxReadWait {
		return Config{}, fmt.Errorf("%s: %v is outside %v to %v: a read that waits for its position needs some time to wait, and no longer than the HTTP server lets a response take",
			source["read-wait"], c.ReadWait, MinReadWait, MaxReadWait)
	}
	if err := c.loadGroup(vals, source); err != nil {
		return Config{}, err
	}
	for _, req := range []struct{ name, v string }{
		{"http-addr", c.HTTPAddr}, {"topic", c.Topic}, {"data-dir", c.DataDir},
	} {
		if req.v == "" {
			return Config{}, fmt.Errorf("%s: must not be empty", source[req.name])
		}
	}
	switch {
	case !c.Embedded() && c.Registry == "":
		return Config{}, fmt.Errorf("%s is set, so %s must be too", source["brokers"], source["registry"])
	case c.Embedded() && c.Registry != "":
		return Config{}, fmt.Errorf("%s is set without %s: give both for an existing cluster, or neither for the in-process one", source["registry"], source["brokers"])
	case c.Embedded() && (c.EmbeddedKafkaAddr == "" || c.EmbeddedRegistryAddr == ""):
		return Config{}, errors.New("embedded mode needs --embedded-kafka-addr and --embedded-registry-addr")
	}
	return c, nil
}

// loadGroup reads and checks the partitioned-mode settings.
func (c *Config) loadGroup(vals map[string]*string, source map[string]string) error {
	v := strings.TrimSpace(*vals["standbys"])
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("%s: %q is not a whole number of 0 or more", source["standbys"], v)
	}
	c.Standbys = n
	if c.SessionTimeout, err = parseDuration(*vals["session-timeout"], source["session-timeout"]); err != nil {
		return err
	}
	if c.SessionTimeout < MinSessionTimeout {
		return fmt.Errorf("%s: %v is below %v: Kafka brokers refuse shorter sessions",
			source["session-timeout"], c.SessionTimeout, MinSessionTimeout)
	}
	if !c.Partitioned() {
		switch {
		case c.AdvertiseAddr != "":
			return fmt.Errorf("%s is set without %s: it only means something in partitioned mode", source["advertise-addr"], source["group"])
		case c.Standbys != 0:
			return fmt.Errorf("%s is set without %s: it only means something in partitioned mode", source["standbys"], source["group"])
		case c.SessionTimeout != DefaultSessionTimeout:
			return fmt.Errorf("%s is set without %s: it only means something in partitioned mode", source["session-timeout"], source["group"])
		}
		return nil
	}
	if c.Embedded() {
		return fmt.Errorf("%s needs %s (and %s): the members of a group share one cluster, and embedded mode's in-process broker listens on one fixed port and lives and dies with its instance, so several instances cannot each embed one; "+
			"start one instance without %s as the cluster and point the members at it (--brokers 127.0.0.1:19092 --registry http://127.0.0.1:18081), or use a real cluster",
			source["group"], source["brokers"], source["registry"], source["group"])
	}
	if c.AdvertiseAddr != "" {
		if err := CheckAdvertise(c.AdvertiseAddr); err != nil {
			return fmt.Errorf("%s: %w", source["advertise-addr"], err)
		}
	}
	return nil
}

// CheckAdvertise checks an address to advertise to the other members of a
// group: host:port with a host they can dial (not empty, 0.0.0.0 or ::)
// and a port other than 0.
func CheckAdvertise(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return fmt.Errorf("%q names no host the other members can reach; give --advertise-addr, e.g. 10.0.0.5:8080", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port must be from 1 to 65535", addr)
	}
	return nil
}

func parseDuration(v, source string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: %q is not a non-negative duration such as 30s", source, v)
	}
	return d, nil
}

// ReadDotEnv reads a .env file: one KEY=VALUE a line, blank lines and lines
// starting with # ignored, an optional "export " before the key. A value may
// be in double quotes (with \n, \t, \", \\ escapes) or single quotes (taken
// literally); an unquoted value ends at " #" (a comment) and is trimmed. A
// missing file is an empty map; a line it cannot parse is an error naming
// the line.
func ReadDotEnv(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return parseDotEnv(path, b)
}

func parseDotEnv(name string, b []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if n == 1 {
			line = strings.TrimPrefix(line, "\uFEFF")
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || !validKey(key) {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE", name, n)
		}
		v, err := parseValue(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", name, n, key, err)
		}
		out[key] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return out, nil
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func parseValue(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	switch q := v[0]; q {
	case '"', '\'':
		end := -1
		for i := 1; i < len(v); i++ {
			if q == '"' && v[i] == '\\' {
				i++
				continue
			}
			if v[i] == q {
				end = i
				break
			}
		}
		if end < 0 {
			return "", errors.New("unterminated quote")
		}
		if rest := strings.TrimSpace(v[end+1:]); rest != "" && !strings.HasPrefix(rest, "#") {
			return "", fmt.Errorf("unexpected %q after the closing quote", rest)
		}
		inner := v[1:end]
		if q == '\'' {
			return inner, nil
		}
		s, err := strconv.Unquote(`"` + inner + `"`)
		if err != nil {
			return "", fmt.Errorf("bad escape in %s", v[:end+1])
		}
		return s, nil
	}
	if i := strings.Index(v, " #"); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v), nil
}

// MinMaxStaleness is the least non-zero MaxStaleness: the store's view of
// its own freshness is about a second coarse, so a smaller bound would make
// /readyz flap on a healthy broker.
const MinMaxStaleness = 3 * time.Second

// MinReadWait and MaxReadWait bound ReadWait. Above MaxReadWait the HTTP
// server's write timeout (60s, PUT's 30s delivery bound plus 30s) could cut
// a waiting read off without an answer.
const (
	MinReadWait = time.Millisecond
	MaxReadWait = 30 * time.Second
)

// MaxPartitions bounds Partitions.
const MaxPartitions = 10000

// DefaultSessionTimeout is SessionTimeout's default (Kafka's), and
// MinSessionTimeout its least value (brokers refuse shorter sessions).
const (
	DefaultSessionTimeout = 45 * time.Second
	MinSessionTimeout     = 6 * time.Second
)
