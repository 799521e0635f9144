package io.compactkv.bench.streams;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;

import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.InvalidStateStoreException;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;

/**
 * Restore baseline: how long Kafka Streams takes to restore a compacted topic into an
 * empty GlobalKTable (default store: RocksDB).
 *
 * <p>Timed from {@code streams.start()} until the instance is RUNNING and the store is
 * queryable and {@code approximateNumEntries()} has been read. A global-only topology
 * restores its global stores during start-up (before RUNNING), so RUNNING marks the end
 * of the restore.
 *
 * <p>Args: {@code --brokers HOST:PORT[,..] --topic T [--state-dir DIR] [--verify]
 * [--timeout-seconds 900]}. Prints exactly one JSON line on stdout; logs go to stderr.
 */
public final class RestoreBench {
    private static final String STORE = "store";

    public static void main(String[] args) throws Exception {
        String brokers = "127.0.0.1:9092";
        String topic = null;
        String stateDirArg = null;
        boolean verify = false;
        long timeoutSeconds = 900;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            switch (a) {
                case "--brokers" -> brokers = args[++i];
                case "--topic" -> topic = args[++i];
                case "--state-dir" -> stateDirArg = args[++i];
                case "--verify" -> verify = true;
                case "--timeout-seconds" -> timeoutSeconds = Long.parseLong(args[++i]);
                default -> die("unknown argument: " + a);
            }
        }
        if (topic == null) {
            die("--topic is required");
        }
        int rc = run(brokers, topic, stateDirArg, verify, timeoutSeconds);
        System.out.flush();
        System.err.flush();
        // Make sure no lingering non-daemon thread keeps the JVM alive.
        System.exit(rc);
    }

    private static int run(String brokers, String topic, String stateDirArg, boolean verify,
                           long timeoutSeconds) throws Exception {
        Path stateDir = stateDirArg != null
                ? Files.createDirectories(Path.of(stateDirArg)).resolve("run-" + UUID.randomUUID())
                : Files.createTempDirectory("streams-bench-");
        Files.createDirectories(stateDir);
        String appId = "compactkv-bench-streams-" + UUID.randomUUID();

        // Only the settings that must be set; everything else (incl. global.consumer.*) is
        // Kafka Streams' default. All of these are reported under "settings".
        Map<String, String> settings = new LinkedHashMap<>();
        settings.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        settings.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        settings.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        Properties props = new Properties();
        props.putAll(settings);

        StreamsBuilder builder = new StreamsBuilder();
        builder.globalTable(topic, Consumed.with(Serdes.Bytes(), Serdes.Bytes()),
                Materialized.<Bytes, Bytes, KeyValueStore<Bytes, byte[]>>as(STORE));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);

        AtomicLong restoredTotal = new AtomicLong();   // sum of onRestoreEnd totals
        AtomicLong restoredBatches = new AtomicLong(); // sum of onBatchRestored counts
        AtomicLong restoreEnds = new AtomicLong();
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String storeName, long startingOffset, long endingOffset) {
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String storeName, long batchEndOffset, long numRestored) {
                restoredBatches.addAndGet(numRestored);
            }

            @Override
            public void onRestoreEnd(TopicPartition tp, String storeName, long totalRestored) {
                restoredTotal.addAndGet(totalRestored);
                restoreEnds.incrementAndGet();
            }
        });

        CountDownLatch runningOrFailed = new CountDownLatch(1);
        AtomicReference<KafkaStreams.State> terminal = new AtomicReference<>();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        streams.setStateListener((newState, oldState) -> {
            if (newState == KafkaStreams.State.RUNNING) {
                runningOrFailed.countDown();
            } else if (newState == KafkaStreams.State.ERROR || newState == KafkaStreams.State.PENDING_ERROR
                    || newState == KafkaStreams.State.NOT_RUNNING || newState == KafkaStreams.State.PENDING_SHUTDOWN) {
                terminal.compareAndSet(null, newState);
                runningOrFailed.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            failure.compareAndSet(null, e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });

        int rc = 0;
        try {
            long t0 = System.nanoTime();
            streams.start();
            if (!runningOrFailed.await(timeoutSeconds, TimeUnit.SECONDS)) {
                throw new IllegalStateException("timed out after " + timeoutSeconds + "s waiting for RUNNING (state="
                        + streams.state() + ")");
            }
            if (terminal.get() != null) {
                throw new IllegalStateException("streams went to " + terminal.get() + " before RUNNING", failure.get());
            }
            ReadOnlyKeyValueStore<Bytes, Bytes> store = null;
            long deadline = t0 + TimeUnit.SECONDS.toNanos(timeoutSeconds);
            while (store == null) {
                try {
                    store = streams.store(StoreQueryParameters.fromNameAndType(STORE,
                            QueryableStoreTypes.<Bytes, Bytes>keyValueStore()));
                } catch (InvalidStateStoreException e) {
                    if (System.nanoTime() > deadline) {
                        throw e;
                    }
                    Thread.sleep(1);
                }
            }
            long approx = store.approximateNumEntries();
            long t1 = System.nanoTime();

            double seconds = (t1 - t0) / 1e9;
            long records = restoreEnds.get() > 0 ? restoredTotal.get() : restoredBatches.get();
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("impl", "kafka-streams-globalktable");
            out.put("records", records);
            out.put("seconds", seconds);
            out.put("records_per_sec", seconds > 0 ? records / seconds : 0.0);
            out.put("keys", approx);
            if (verify) {
                long exact = 0;
                try (KeyValueIterator<Bytes, Bytes> it = store.all()) {
                    while (it.hasNext()) {
                        KeyValue<Bytes, Bytes> kv = it.next();
                        if (kv.value != null) {
                            exact++;
                        }
                    }
                }
                out.put("exact_keys", exact);
            }
            out.put("restored_batches_sum", restoredBatches.get());
            out.put("peak_rss_bytes", peakRss());
            out.put("kafka_streams_version", AppInfoParser.getVersion());
            out.put("settings", settings);
            System.out.println(toJson(out));
        } catch (Throwable t) {
            System.err.println("streams-bench: " + t);
            if (t.getCause() != null) {
                System.err.println("streams-bench: cause: " + t.getCause());
            }
            rc = 1;
        } finally {
            streams.close(Duration.ofSeconds(60));
            // The state dir is unique to this run: delete it outright (streams.cleanUp() only
            // warns for a global-only app's leftover global store directory).
            deleteTree(stateDir);
        }
        return rc;
    }

    private static long peakRss() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    String[] f = line.trim().split("\\s+");
                    return Long.parseLong(f[1]) * 1024L;
                }
            }
        } catch (IOException | RuntimeException ignored) {
            // not on Linux
        }
        return -1;
    }

    private static void deleteTree(Path root) {
        if (!Files.exists(root)) {
            return;
        }
        List<Path> paths = new ArrayList<>();
        try (Stream<Path> s = Files.walk(root)) {
            s.sorted(Comparator.reverseOrder()).forEach(paths::add);
        } catch (IOException e) {
            return;
        }
        for (Path p : paths) {
            try {
                Files.deleteIfExists(p);
            } catch (IOException ignored) {
                // best effort
            }
        }
    }

    private static String toJson(Object o) {
        if (o == null) {
            return "null";
        }
        if (o instanceof Map<?, ?> m) {
            StringBuilder sb = new StringBuilder("{");
            boolean first = true;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                sb.append(quote(String.valueOf(e.getKey()))).append(':').append(toJson(e.getValue()));
            }
            return sb.append('}').toString();
        }
        if (o instanceof Double d) {
            return (d.isNaN() || d.isInfinite()) ? "null" : d.toString();
        }
        if (o instanceof Number || o instanceof Boolean) {
            return o.toString();
        }
        return quote(o.toString());
    }

    private static String quote(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                default -> {
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
                }
            }
        }
        return sb.append('"').toString();
    }

    private static void die(String msg) {
        System.err.println("streams-bench: " + msg);
        System.err.println("usage: java -jar streams-bench.jar --brokers HOST:PORT --topic T [--state-dir DIR] [--verify] [--timeout-seconds N]");
        System.exit(2);
    }

    private RestoreBench() {
    }
}
