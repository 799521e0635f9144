// Command profilesvc is an HTTP service that keeps user profiles in a
// compactkv store: PUT, GET and DELETE /profiles/{id}, GET /profiles for a
// page of them, /healthz, /readyz and /metrics.
//
// With no broker given it runs in embedded mode: an in-process Kafka broker
// (127.0.0.1:19092) and schema registry (127.0.0.1:18081) start inside it,
// and everything persists under the data directory: the broker's log in
// <data-dir>/kafka, the registry's schemas in <data-dir>/registry, and the
// cache in <data-dir>/cache. Embedded mode compacts the broker's topics every
// --compact-interval (30s), since the in-process broker's own compaction
// timer does not survive a restart. With --brokers and --registry it uses an
// existing cluster and registry instead, and keeps only its cache in
// <data-dir>/cache.
//
// Settings come from flags, then environment variables, then a .env file in
// the working directory (.env.example in the repository root lists them); run
// profilesvc -h for the list.
//
// The HTTP server starts before the store: until the store has restored,
// /readyz and the profile routes answer 503. From then on the profile routes
// serve from the cache whatever /readyz says (a stale read beats none), and
// /readyz answers 503 while the follower of some partition has stopped (a
// poison record, a cache that cannot be written) and, with --max-staleness,
// while some partition has not been caught up with the topic for longer
// than that. A broker that does not answer leaves it ready (the partitions
// show as stalled) until --max-staleness runs out: an outage of the broker
// should not take every instance out of its load balancer at once.
//
// With --group (and --brokers) the instances split the topic's partitions
// through a Kafka consumer group (partitioned mode): each restores and
// serves only the partitions it owns, advertises --advertise-addr (default:
// the address it listens on) to the others, and forwards a read of another
// instance's key to that owner, one hop; while a partition has no owner
// that serves it (a rebalance), its keys answer 503 with Retry-After.
// GET /profiles merges every owner's page. --standbys keeps partitions warm
// on other members for a fast failover; --session-timeout is how long the
// keys of a member that died (kill -9) go unserved.
//
// Several instances can serve one topic. A 2xx PUT or DELETE answers with a
// Kvstore-Position header; a GET or DELETE that sends it back to any
// instance is served once that instance has applied the write, and a GET
// with ?consistent=true sees every write acknowledged before it. Either
// waits at most --read-wait (5s), then answers 504. A DELETE answers 404
// only when such a consistent read finds no profile. The package httpapi
// says more.
//
// SIGINT or SIGTERM stops it within --shutdown-timeout, broker or no broker:
// the server stops accepting requests and finishes those in flight until the
// last third of the timeout (at most 5s); it then cancels those still
// running (they answer 503) and the store closes within what is left
// (kvstore.CloseTimeout is half of it; the rest is for stopping the follower
// and the Kafka clients); the embedded broker then saves its log, outside
// the bound (in embedded mode the broker cannot be gone). A store
// still closing at the bound is left as a crash would leave it (the cache is
// consistent, and the next start catches up from its checkpoint). The process
// exits 0 (what it had to cut short to keep the bound is logged at Warn), or
// 1 if closing the cache file itself failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/compactkv/compactkv/cmd/profilesvc/internal/config"
	"github.com/compactkv/compactkv/cmd/profilesvc/internal/httpapi"
	"github.com/compactkv/compactkv/embedded"
	"github.com/compactkv/compactkv/kvstore"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := config.Load(os.Args[1:], os.LookupEnv, ".env", os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		log.Error("bad configuration", "err", err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		log.Error("cannot listen", "http_addr", cfg.HTTPAddr, "err", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, ln, log); err != nil {
		log.Error("profilesvc failed", "err", err)
		stop()
		os.Exit(1)
	}
}

// run serves HTTP on ln (cfg.HTTPAddr is not used) until ctx ends (a
// signal), then shuts down in order, within cfg.ShutdownTimeout: the HTTP
// server (finishing requests in flight), the store, the embedded cluster.
// Deferred calls run in reverse, so they are registered in the opposite order.
// It closes ln.
func run(ctx context.Context, cfg config.Config, ln net.Listener, log *slog.Logger) (err error) {
	httpURL := "http://" + ln.Addr().String()
	cacheDir := filepath.Join(cfg.DataDir, "cache")

	brokers, registry := cfg.Brokers, cfg.Registry
	if cfg.Embedded() {
		c, err := embedded.Start(
			embedded.KafkaAddr(cfg.EmbeddedKafkaAddr),
			embedded.RegistryAddr(cfg.EmbeddedRegistryAddr),
			embedded.DataDir(filepath.Join(cfg.DataDir, "kafka")),
			embedded.RegistryFile(filepath.Join(cfg.DataDir, "registry", "schemas.json")),
			embedded.Logger(log))
		if err != nil {
			ln.Close()
			return err
		}
		defer func() {
			c.Close()
			log.Info("embedded broker and registry stopped")
		}()
		brokers, registry = c.Brokers(), c.RegistryURL()
		defer compactEvery(c, cfg.CompactInterval, log)()
		log.Info("profilesvc starting", "mode", "embedded",
			"kafka", brokers[0], "schema_registry", registry, "http", httpURL,
			"topic", cfg.Topic, "data_dir", cfg.DataDir, "compact_interval", cfg.CompactInterval)
	} else {
		log.Info("profilesvc starting", "mode", "external",
			"kafka", brokers, "schema_registry", registry, "http", httpURL,
			"topic", cfg.Topic, "cache_dir", cacheDir)
	}
	opts := []kvstore.Option{
		kvstore.Brokers(brokers...),
		kvstore.Registry(registry),
		kvstore.ValueSchema(httpapi.UserSchema),
		kvstore.Dir(cacheDir),
		kvstore.Partitions(cfg.Partitions),
		kvstore.KeyPartitioner(partitioner(cfg.Partitioner)),
		kvstore.CloseTimeout(closeTimeout(cfg.ShutdownTimeout)),
		// Below the server's WriteTimeout, so that a write the broker
		// never acknowledges still gets its 503 to the client.
		kvstore.DeliveryTimeout(writeDelivery),
		kvstore.Logger(log),
	}
	if cfg.Partitioned() {
		advertise := cfg.AdvertiseAddr
		if advertise == "" {
			advertise = ln.Addr().String()
			if err := config.CheckAdvertise(advertise); err != nil {
				ln.Close()
				return fmt.Errorf("--group without --advertise-addr advertises the address --http-addr listens on: %w", err)
			}
		}
		opts = append(opts, kvstore.Group(cfg.Group), kvstore.Advertise(advertise),
			kvstore.Standbys(cfg.Standbys), kvstore.SessionTimeout(cfg.SessionTimeout))
		log.Info("partitioned mode", "group", cfg.Group, "advertise", advertise,
			"standbys", cfg.Standbys, "session_timeout", cfg.SessionTimeout)
	}

	// One deadline bounds the whole shutdown, from the moment it begins.
	sd := newShutdown(cfg.ShutdownTimeout)
	var store *kvstore.Store[httpapi.User]
	defer func() {
		if store == nil {
			return
		}
		if e := closeStore(store, sd.deadline()); e != nil {
			log.Warn("closing the store", "err", e)
			if !errors.Is(e, errGaveUp) {
				err = errors.Join(err, fmt.Errorf("close store: %w", e))
			}
			return
		}
		log.Info("store closed")
	}()

	api := httpapi.New(log, filepath.Join(cacheDir, cfg.Topic+".db"),
		httpapi.MaxStaleness(cfg.MaxStaleness), httpapi.ReadWait(cfg.ReadWait))
	// Requests run under reqCtx, so that a shutdown can end the store calls
	// of those it can no longer wait for.
	reqCtx, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	srv := &http.Server{
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		Handler:           api.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      writeDelivery + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer func() {
		if e := drain(srv, cancelRequests, sd.httpEnd()); errors.Is(e, errGaveUp) {
			log.Warn("shutting down the HTTP server", "err", e)
		} else if e != nil {
			err = errors.Join(err, fmt.Errorf("shut down HTTP server: %w", e))
		}
		log.Info("HTTP server stopped")
	}()

	type opened struct {
		s   *kvstore.Store[httpapi.User]
		err error
	}
	openDone := make(chan opened, 1)
	go func() {
		s, err := kvstore.Open[httpapi.User](ctx, cfg.Topic,
			append(opts, kvstore.OnRestore(api.RestoreListener()))...)
		openDone <- opened{s, err}
	}()

	for {
		select {
		case o := <-openDone:
			openDone = nil
			if o.err != nil {
				if ctx.Err() != nil {
					log.Info("shutting down before the store was ready")
					return nil
				}
				return fmt.Errorf("open store: %w", o.err)
			}
			store = o.s
			rs := store.Stats().Restore
			api.SetReady(store, rs)
			log.Info("store ready", "mode", rs.Mode, "reason", rs.Reason, "records", rs.Records,
				"bytes", rs.Bytes, "duration", rs.Duration, "partitions", rs.Partitions)
			if g := store.Stats().Group; g != nil {
				log.Info("serving as a member of the group", "group", g.Group, "generation", g.Generation,
					"owned", store.Stats().Owned())
			}
		case err := <-serveErr:
			return fmt.Errorf("HTTP server: %w", err)
		case <-ctx.Done():
			log.Info("shutting down: finishing requests in flight")
			if openDone != nil {
				// Open gives up once ctx is done; close what it may still
				// return, unless it takes longer than the shutdown may.
				t := time.NewTimer(time.Until(sd.httpEnd()))
				defer t.Stop()
				select {
				case o := <-openDone:
					if o.err == nil {
						store = o.s
					}
				case <-t.C:
					log.Warn("the store was still opening at the shutdown's bound; exiting without it")
				}
			}
			return nil
		}
	}
}

// compactEvery compacts the embedded broker's topics every interval until
// the returned stop is called; interval 0 compacts only once, now. kfake's
// own cleaner timer does not restart after it reloads its log from disk.
func compactEvery(c *embedded.Cluster, interval time.Duration, log *slog.Logger) (stop func()) {
	c.Kafka().Compact()
	if interval <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				c.Kafka().Compact()
				log.Debug("compacted the embedded broker's topics")
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// partitioner maps the --partitioner setting (already validated) to the
// store's option.
func partitioner(name string) kvstore.Partitioner {
	if name == "crc32" {
		return kvstore.PartitionerCRC32
	}
	return kvstore.PartitionerMurmur2
}

// writeDelivery bounds how long a PUT or DELETE waits for the broker's
// acknowledgement (kvstore.DeliveryTimeout).
const writeDelivery = 30 * time.Second
