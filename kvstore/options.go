package kvstore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/compactkv/compactkv/serde"
)

// Option configures Open. Options are applied in order; later ones win.
type Option interface{ apply(*config) }

type optFn func(*config)

func (f optFn) apply(c *config) { f(c) }

type config struct {
	brokers         []string
	registryURL     string
	schema          string
	dir             string
	partitions      int32
	replication     int16
	topicConfigs    map[string]string
	compat          sr.CompatibilityLevel
	partitioner     Partitioner
	restoreMemory   int
	logger          *slog.Logger
	poison          PoisonPolicy // poison.go
	listener        RestoreListener
	progressEvery   time.Duration
	lockTimeout     time.Duration
	deliveryTimeout time.Duration
	closeTimeout    time.Duration
	stateListener   StateListener
	kgoOpts         []kgo.Opt
	srOpts          []sr.ClientOpt
	// partitioned mode (group.go)
	group          string
	advertise      string
	standbys       int
	sessionTimeout time.Duration
	instanceID     string
}

func defaultConfig() config {
	return config{
		dir:             "data",
		partitions:      1,
		replication:     -1,
		compat:          sr.CompatFullTransitive,
		partitioner:     PartitionerMurmur2,
		restoreMemory:   64 << 20,
		progressEvery:   5 * time.Second,
		lockTimeout:     5 * time.Second,
		deliveryTimeout: 2 * time.Minute,
		closeTimeout:    5 * time.Second,
		logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// validate checks the topic name and the whole configuration and reports
// every problem at once: errors.Join of one error per problem, each wrapping
// ErrBadConfig and naming the option to fix.
func (c *config) validate(topic string) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrBadConfig}, args...)...))
	}
	if err := validTopic(topic); err != nil {
		errs = append(errs, err)
	}
	if len(c.brokers) == 0 {
		bad("no brokers (use Brokers)")
	}
	for _, b := range c.brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			bad("Brokers(%q): want host:port", b)
		}
	}
	if c.registryURL == "" {
		bad("no schema registry URL (use Registry)")
	} else if u, err := url.Parse(c.registryURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("Registry(%q): want an http:// or https:// URL", c.registryURL)
	}
	if strings.TrimSpace(c.schema) == "" {
		bad("no value schema (use ValueSchema)")
	} else if err := serde.CheckSchema(c.schema); err != nil {
		bad("ValueSchema: %v", err)
	}
	for k := range c.topicConfigs {
		switch k {
		case "":
			bad("TopicConfig with an empty key")
		case "cleanup.policy":
			bad("TopicConfig(%q): the topic is always compacted; leave it out", k)
		}
	}
	switch c.compat {
	case sr.CompatNone, sr.CompatBackward, sr.CompatBackwardTransitive, sr.CompatForward,
		sr.CompatForwardTransitive, sr.CompatFull, sr.CompatFullTransitive:
	default:
		bad("SchemaCompatibility(%v): not a compatibility level", c.compat)
	}
	if c.dir == "" {
		bad("empty cache directory (use Dir)")
	}
	if c.partitions < 1 {
		bad("Partitions(%d): want at least 1", c.partitions)
	}
	if c.replication < -1 || c.replication == 0 {
		bad("ReplicationFactor(%d): want -1 (broker default) or at least 1", c.replication)
	}
	if c.partitioner != PartitionerMurmur2 && c.partitioner != PartitionerCRC32 {
		bad("KeyPartitioner(%v): want PartitionerMurmur2 or PartitionerCRC32", c.partitioner)
	}
	if c.restoreMemory < 1<<20 {
		bad("RestoreMemory(%d): want at least 1 MiB", c.restoreMemory)
	}
	if c.lockTimeout <= 0 {
		bad("LockTimeout(%v): want a positive wait", c.lockTimeout)
	}
	if c.deliveryTimeout < time.Second {
		bad("DeliveryTimeout(%v): want at least 1s", c.deliveryTimeout)
	}
	var needGroup []string
	for name, set := range map[string]bool{"Advertise": c.advertise != "", "Standbys": c.standbys != 0,
		"SessionTimeout": c.sessionTimeout != 0, "InstanceID": c.instanceID != ""} {
		if set {
			needGroup = append(needGroup, name)
		}
	}
	slices.Sort(needGroup)
	switch {
	case c.group == "" && len(needGroup) > 0:
		bad("%s need(s) Group (partitioned mode)", strings.Join(needGroup, ", "))
	case c.group != "" && c.advertise == "":
		bad("Group(%q) needs Advertise: the address other members route this member's keys to", c.group)
	case len(c.advertise) > 1024:
		bad("Advertise: want at most 1024 bytes, got %d", len(c.advertise))
	}
	if c.standbys < 0 {
		bad("Standbys(%d): want 0 or more", c.standbys)
	}
	if c.sessionTimeout < 0 || (c.sessionTimeout > 0 && c.sessionTimeout < 6*time.Second) {
		bad("SessionTimeout(%v): want at least 6s (brokers refuse less)", c.sessionTimeout)
	}
	if c.closeTimeout <= 0 {
		bad("CloseTimeout(%v): want a positive wait", c.closeTimeout)
	}
	if c.progressEvery < 0 {
		bad("ProgressInterval(%v): want 0 (no progress log) or a positive interval", c.progressEvery)
	}
	if c.poison != PoisonFail && c.poison != PoisonSkip {
		bad("OnPoison(%v): want PoisonFail or PoisonSkip", c.poison)
	}
	if c.logger == nil {
		bad("Logger(nil): want a logger (the default discards)")
	}
	return errors.Join(errs...)
}

// Brokers sets the Kafka bootstrap servers, "host:port". Required.
func Brokers(addrs ...string) Option {
	return optFn(func(c *config) { c.brokers = append([]string(nil), addrs...) })
}

// Registry sets the schema registry's base URL, for example
// "http://localhost:8081". Required.
func Registry(url string) Option { return optFn(func(c *config) { c.registryURL = url }) }

// ValueSchema sets the Avro schema (JSON) values are written with and read
// into. V must match it (hamba/avro struct tags). Required.
func ValueSchema(avsc string) Option { return optFn(func(c *config) { c.schema = avsc }) }

// Dir sets the directory of the local cache file, "<dir>/<topic>.db". It is
// created if missing. Default "data".
func Dir(dir string) Option { return optFn(func(c *config) { c.dir = dir }) }

// Partitions sets the partition count used when Open creates the topic.
// An existing topic keeps its own. Default 1; at least 1.
func Partitions(n int32) Option { return optFn(func(c *config) { c.partitions = n }) }

// ReplicationFactor sets the replication factor used when Open creates the
// topic. Default -1: the broker's default.replication.factor.
func ReplicationFactor(n int16) Option { return optFn(func(c *config) { c.replication = n }) }

// TopicConfig adds a topic config used when Open creates the topic, for
// example TopicConfig("delete.retention.ms", "86400000"). cleanup.policy is
// always compact. Default: none beyond cleanup.policy.
func TopicConfig(key, value string) Option {
	return optFn(func(c *config) {
		if c.topicConfigs == nil {
			c.topicConfigs = map[string]string{}
		}
		c.topicConfigs[key] = value
	})
}

// SchemaCompatibility sets the rule the value schema is checked against
// before it is registered (sr.CompatFullTransitive, sr.CompatBackward,
// sr.CompatNone, ...). The registry's own level for the subject (or its
// global level) applies too: the stricter of the two is checked (see
// serde.New), so sr.CompatNone skips only the library's rule.
//
// Default sr.CompatFullTransitive: the new schema must read records written
// with every registered version, and every registered version must read
// records written with the new one. During a rolling deploy both run at
// once: new instances read old records, old instances read new records (an
// old instance that meets a record it cannot resolve stops following the
// topic, and cannot restore after a restart), and a record stays in a
// compacted topic until its key is written again, so any version may meet
// any other. Under BACKWARD, a new version that drops a field without a
// default would be accepted and break the old instances.
//
// What FULL_TRANSITIVE allows: adding or removing fields that have a
// default. A required field (no default) can therefore never be removed
// while any version that requires it is registered. To retire one: first
// deploy a version that gives it a default, everywhere; then, once no
// instance runs an older version, register the version without the field
// under a looser rule for that one deploy (SchemaCompatibility(sr.CompatFull),
// which checks against the latest version only, or the registry's level for
// the subject).
func SchemaCompatibility(level sr.CompatibilityLevel) Option {
	return optFn(func(c *config) { c.compat = level })
}

// KeyPartitioner sets how keys map to partitions; it matters only for
// topics with more than one partition. Default PartitionerMurmur2
// (Java-compatible). Use PartitionerCRC32 when librdkafka clients with their
// default partitioner write to the same topic.
func KeyPartitioner(p Partitioner) Option {
	return optFn(func(c *config) { c.partitioner = p })
}

// RestoreMemory bounds the memory a full restore uses to sort records before
// loading them; beyond it sorted runs are spilled to files in the cache
// directory (each half of it, sorted and written on a goroutine of its own
// while the restore reads into the other half; the merge reads at most 64
// at once, merging the oldest first when there are more). Default 64 MiB;
// at least 1 MiB. A quarter of it bounds what a delta restore in Open holds
// in memory for the follower to write into the file after Open returns
// (each record counted as its key twice, its value and 152 bytes); a larger
// delta is written into the file as it is read.
//
// Besides it, a full restore holds up to three polls of the topic at once:
// fetches of 2 MiB, 1 MiB a partition (a kgo.FetchMaxBytes or
// kgo.FetchMaxPartitionBytes given with KafkaOpts changes them), one per
// broker, and a record batch larger than that comes whole (up to the
// topic's max.message.bytes). At the defaults, against one broker with
// batches of up to 1 MiB, a restore's peak Go heap was 99 to 138 MiB at 1M
// and at 4M records of ~58 bytes (BENCHMARKS.md). Its peak RSS also counts
// the pages of the cache file it wrote and then checked, which grow with
// the table (about 190 to 220 MiB at 1M, 415 to 435 MiB at 4M): file pages the
// kernel can reclaim, not heap.
//
// On disk, a full restore needs room in the cache directory for the runs
// and the new file at once (up to about twice the new file), next
// to the old file, which it replaces at the end. A process killed during a
// restore leaves its runs behind; the next Open of that directory removes
// them.
func RestoreMemory(bytes int) Option { return optFn(func(c *config) { c.restoreMemory = bytes }) }

// LockTimeout bounds how long Open waits for the cache file while another
// store (in this process or another) holds it; then Open fails with an
// error naming the file and wrapping ErrCacheLocked. Default 5s; must be
// positive.
func LockTimeout(d time.Duration) Option { return optFn(func(c *config) { c.lockTimeout = d }) }

// Logger sets the logger the store writes to (restore progress, skipped
// poison records, misrouted keys, the follower's troubles). Default: a
// logger that discards everything. nil is refused.
func Logger(l *slog.Logger) Option { return optFn(func(c *config) { c.logger = l }) }

// KafkaOpts adds franz-go client options to the producer, the admin requests
// and the consumer: TLS, SASL, compression, timeouts, a custom dialer. They
// are applied after the store's own options, except those the store's
// guarantees rest on (acks=all, explicit partitions, read_committed, never
// skipping past missing offsets), which are applied last and cannot be
// changed. Credentials go to franz-go as they are; the store never logs
// them or puts them in an error. Default: none (plaintext, no SASL, no
// compression). Later calls add to earlier ones. Do not pass
// kgo.DisableIdempotentWrite: the store's writes rest on the idempotent
// producer. The client's own log goes to kgo.WithLogger (for example
// kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelInfo, nil))): the
// place to look when a connection or authentication fails, since the broker
// often answers a bad password by closing the connection ("EOF"). For
// example:
//
//	kvstore.KafkaOpts(
//		kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}), // TLS
//		kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()),   // SASL/PLAIN (pkg/sasl/plain)
//		kgo.ProducerBatchCompression(kgo.ZstdCompression()),          // compress batches
//	)
//
// SCRAM is kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism())
// (or AsSha512Mechanism) from pkg/sasl/scram; OAUTHBEARER and AWS MSK IAM
// have their own packages under pkg/sasl.
func KafkaOpts(opts ...kgo.Opt) Option {
	return optFn(func(c *config) {
		for _, o := range opts {
			if o != nil { // an unset kgo.Opt variable sets nothing
				c.kgoOpts = append(c.kgoOpts, o)
			}
		}
	})
}

// Group turns on partitioned mode: the store joins consumer group id on its
// topic and restores, follows and serves only the partitions the group
// assigns it (cooperative-sticky, Kafka as the only coordinator), each once
// it has caught up; a Get or Scan of a key another member owns fails with
// a *NotOwnerError naming the owner (Owner says it up front). Writes go to
// Kafka from any member, and Positions, WaitFor and Sync work across
// members. Advertise is required with it. Default "": global mode, where
// every store holds and serves the whole topic.
func Group(id string) Option { return optFn(func(c *config) { c.group = id }) }

// Advertise sets the address ("host:port") other members of the group are
// told to send this member's keys to (NotOwnerError.Owner, Store.Owner).
// Required with Group; at most 1024 bytes. Default "".
func Advertise(addr string) Option { return optFn(func(c *config) { c.advertise = addr }) }

// Standbys sets how many members other than a partition's owner keep it
// warm (followed and checkpointed, not served), so that a failover promotes
// a standby instead of restoring from the start. With fewer members than
// n+1, every other member is a standby. Group only. Default 0. Whatever n,
// a partition moving to this member in a rebalance shows as a standby here
// (RoleStandby) until the group makes it this member's own.
func Standbys(n int) Option { return optFn(func(c *config) { c.standbys = n }) }

// SessionTimeout sets how long the broker keeps a member that stopped
// heartbeating (a crash, a kill -9) before its partitions move: the time
// its keys go unserved. Group only; at least 6s. Default 45s (Kafka's).
func SessionTimeout(d time.Duration) Option { return optFn(func(c *config) { c.sessionTimeout = d }) }

// InstanceID turns on static membership: a member that restarts with the
// same id within SessionTimeout takes its partitions back without the
// others moving (and does not leave the group on Close: its partitions wait
// for it, unserved, up to SessionTimeout). Group only. Default "": dynamic
// membership.
func InstanceID(id string) Option { return optFn(func(c *config) { c.instanceID = id }) }

// RegistryOpts adds schema registry client options (sr.ClientOpt): basic or
// bearer auth, TLS, an HTTP client. Default: none (no auth; an https://
// registry URL uses the system roots). For example:
//
//	kvstore.RegistryOpts(sr.BasicAuth(apiKey, apiSecret)) // Confluent Cloud: the API key and secret
//	kvstore.RegistryOpts(sr.BearerToken(token))
//	kvstore.RegistryOpts(sr.DialTLSConfig(tlsCfg)) // a private CA or client certificates
func RegistryOpts(opts ...sr.ClientOpt) Option {
	return optFn(func(c *config) { c.srOpts = append(c.srOpts, opts...) })
}

// DeliveryTimeout bounds how long a write waits for the broker's
// acknowledgement, retries included, like the Java producer's
// delivery.timeout.ms: past it Put and Delete return an error wrapping
// ErrDeliveryTimeout (the record may still reach the topic), and PutAsync's
// done is called with it. A ctx that ends sooner ends the wait sooner.
// Default 2m, Kafka's own; at least 1s.
func DeliveryTimeout(d time.Duration) Option { return optFn(func(c *config) { c.deliveryTimeout = d }) }

// CloseTimeout bounds how long Close waits, in all, for the store's own
// writes to be applied and for writes in flight to be acknowledged, so that
// Close returns within about that long even with the broker gone. Writes
// still in flight then fail with ErrClosed. Default 5s; must be positive.
func CloseTimeout(d time.Duration) Option { return optFn(func(c *config) { c.closeTimeout = d }) }
