// Package embedded starts an in-process Kafka broker (kfake) and a schema
// registry (srfake's handler served over HTTP) on loopback, in the spirit of
// net/http/httptest. Tests, examples and profilesvc's embedded mode use it.
//
// # Basics
//
// Start returns a running Cluster; Brokers and RegistryURL say where to
// connect; Close stops both. With no options both listen on random free ports
// of 127.0.0.1. KafkaListener hands the broker a listener the caller opened,
// for an address that must be known, or held, before the broker starts.
//
// # Durability
//
// With DataDir the broker persists its log under that directory and reloads
// it on the next Start. Without RegistryFile the registry keeps its schemas in
// memory only; with it, every schema (subject, version, ID, soft-deleted or
// not) is written to that file before the request that registered it is
// answered, and seeded back on the next Start, so the schema IDs that
// persisted records carry resolve to the same schemas after a restart.
//
// # Caveats
//
// kfake is a test broker: it compacts on demand (Kafka().Compact()) and when
// its cleaner timer fires, but that timer does not restart after the broker
// reloads its data from disk; a long-running process compacts on a timer of
// its own.
//
// The registry file records schemas only: compatibility levels and modes set
// through the API are not kept, nor is the next free ID (after a hard delete
// of the newest schema, a new schema may get the deleted one's ID). Changes
// made through Registry()'s Go methods reach the file with the next change
// made over HTTP, or with SaveRegistry. A schema registered under several
// subjects keeps its ID, but may get another version number in the subjects
// that registered it after the first.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// Cluster is a running in-process broker and registry.
type Cluster struct {
	kafka    *kfake.Cluster
	registry *srfake.Registry
	regStore *registryStore // nil without RegistryFile
	srv      *http.Server
	regURL   string
	done     chan struct{}
}

// Option configures Start.
type Option interface{ apply(*config) }

type optFn func(*config)

func (f optFn) apply(c *config) { f(c) }

// KafkaAddr sets the broker's listen address. Default "127.0.0.1:0" (a free port).
func KafkaAddr(addr string) Option { return optFn(func(c *config) { c.kafkaAddr = addr }) }

// KafkaListener makes the broker serve on ln instead of listening on
// KafkaAddr, which it overrides. From Start on, ln belongs to the cluster:
// Close closes it, and so does a Start that fails. It serves one broker, so
// kfake options that add brokers cannot be combined with it. Use it when a
// caller must hold the address before the broker starts: a listener opened
// on port 0 and handed over cannot lose its port to another program, as a
// port number found free, closed and listened on again can. Default: none.
func KafkaListener(ln net.Listener) Option { return optFn(func(c *config) { c.kafkaLn = ln }) }

// RegistryAddr sets the registry's listen address. Default "127.0.0.1:0" (a free port).
func RegistryAddr(addr string) Option { return optFn(func(c *config) { c.registryAddr = addr }) }

// DataDir makes the broker persist its log under dir and reload it on start.
// Default: in memory only.
func DataDir(dir string) Option { return optFn(func(c *config) { c.dataDir = dir }) }

// RegistryFile makes the registry persist its schemas to path, a JSON file
// (its directory is created if missing), and seed them back from it on
// Start, with the same subjects, versions and IDs. The file is rewritten
// atomically after every request that changed the registry, before that
// request is answered. A file that cannot be read or holds contradictory
// entries (one ID for two schemas) makes Start fail. Default: in memory only.
func RegistryFile(path string) Option { return optFn(func(c *config) { c.registryFile = path }) }

// Logger sends the broker's warnings and errors (such as a failure to
// persist its log on Close) to l. Default: discarded.
func Logger(l *slog.Logger) Option { return optFn(func(c *config) { c.logger = l }) }

// slogKfake adapts a *slog.Logger to kfake.Logger.
type slogKfake struct{ l *slog.Logger }

func (s slogKfake) Logf(level kfake.LogLevel, format string, args ...any) {
	var lvl slog.Level
	switch level {
	case kfake.LogLevelError:
		lvl = slog.LevelError
	case kfake.LogLevelWarn:
		lvl = slog.LevelWarn
	default:
		return // info and debug: a line per request
	}
	s.l.Log(context.Background(), lvl, "embedded kafka: "+fmt.Sprintf(format, args...))
}

// KfakeOpts passes extra options to kfake.NewCluster (SASL users, TLS,
// broker configs, ...). They are applied after this package's own.
// Default: none.
func KfakeOpts(opts ...kfake.Opt) Option {
	return optFn(func(c *config) { c.kfakeOpts = append(c.kfakeOpts, opts...) })
}

// config is what the options set.
type config struct {
	kafkaAddr, registryAddr string
	kafkaLn                 net.Listener
	dataDir                 string
	registryFile            string
	logger                  *slog.Logger
	kfakeOpts               []kfake.Opt
	registryOpts            []srfake.Option // auth.go
	registryAuth            string          // the Authorization value registryOpts require, for RegistryFile's own requests
}

// defaultConfig is the configuration with no options: both servers on free
// ports of 127.0.0.1, everything in memory.
func defaultConfig() config {
	return config{kafkaAddr: "127.0.0.1:0", registryAddr: "127.0.0.1:0"}
}

// Start starts a one-broker kfake cluster and an srfake registry.
func Start(opts ...Option) (*Cluster, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	kafkaAddr := cfg.kafkaAddr
	listen := func(network, _ string) (net.Listener, error) { return net.Listen(network, kafkaAddr) }
	if ln := cfg.kafkaLn; ln != nil {
		kafkaAddr = ln.Addr().String()
		handed := false
		listen = func(string, string) (net.Listener, error) {
			if handed {
				return nil, errors.New("embedded: a KafkaListener serves one broker")
			}
			handed = true
			return ln, nil
		}
	}
	kopts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(1),
		kfake.ListenFn(listen),
	}
	if cfg.dataDir != "" {
		kopts = append(kopts, kfake.DataDir(cfg.dataDir))
	}
	if cfg.logger != nil {
		kopts = append(kopts, kfake.WithLogger(slogKfake{cfg.logger}))
	}
	kopts = append(kopts, cfg.kfakeOpts...)
	kc, err := kfake.NewCluster(kopts...)
	if err != nil {
		if cfg.kafkaLn != nil {
			cfg.kafkaLn.Close() // kfake may have closed it already; a second Close does no harm
		}
		return nil, fmt.Errorf("embedded: start kafka on %s: %w", kafkaAddr, err)
	}

	ln, err := net.Listen("tcp", cfg.registryAddr)
	if err != nil {
		kc.Close()
		return nil, fmt.Errorf("embedded: start schema registry on %s: %w", cfg.registryAddr, err)
	}
	reg := srfake.NewRegistry(cfg.registryOpts...)
	var handler http.Handler = reg.Handler()
	var rs *registryStore
	if cfg.registryFile != "" {
		if rs, err = openRegistryStore(cfg.registryFile, reg, cfg.registryAuth); err != nil {
			ln.Close()
			kc.Close()
			return nil, err
		}
		handler = rs
	}
	c := &Cluster{
		kafka:    kc,
		registry: reg,
		regStore: rs,
		srv:      &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second},
		regURL:   "http://" + ln.Addr().String(),
		done:     make(chan struct{}),
	}
	go func() {
		defer close(c.done)
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener failed; Close still works
		}
	}()
	return c, nil
}

// Brokers returns the broker's address(es), for kgo.SeedBrokers.
func (c *Cluster) Brokers() []string { return c.kafka.ListenAddrs() }

// RegistryURL returns the registry's base URL, "http://127.0.0.1:PORT".
func (c *Cluster) RegistryURL() string { return c.regURL }

// Kafka returns the kfake cluster for test controls: Compact, DeleteRecords,
// DeleteTopic, Fault, ControlKey.
func (c *Cluster) Kafka() *kfake.Cluster { return c.kafka }

// Registry returns the srfake registry for seeding and inspection.
func (c *Cluster) Registry() *srfake.Registry { return c.registry }

// SaveRegistry writes the registry's schemas to the RegistryFile now. Changes
// made over HTTP are saved as they happen; this is for those made through
// Registry()'s Go methods. Without RegistryFile it does nothing.
func (c *Cluster) SaveRegistry() error {
	if c.regStore == nil {
		return nil
	}
	return c.regStore.save()
}

// Close stops the registry and the broker. It is safe to call more than once.
func (c *Cluster) Close() {
	_ = c.srv.Close()
	<-c.done
	c.kafka.Close()
}
