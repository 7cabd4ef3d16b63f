package kstate.reference;

import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.WindowedSerdes;
import org.apache.kafka.streams.state.SessionStore;

/**
 * The ground truth kstate is compared with: a session-windowed count per key,
 *
 * <pre>
 * stream(input, String/byte[]).groupByKey()
 *     .windowedBy(SessionWindows.ofInactivityGapAndGrace(gap, grace))
 *     .count(materialized)
 *     .toStream().to(output, SessionWindowedSerde(String) / Long)
 * </pre>
 *
 * run with the streams group protocol (KIP-1071).
 *
 * <p>Arguments are {@code key=value} pairs. The application keys are {@code input},
 * {@code output}, {@code store} (default {@code counts}), {@code gap.ms}, {@code grace.ms} and
 * {@code retention.ms} (optional: the store's retention, default gap + grace);
 * every other pair is a {@link StreamsConfig} property ({@code application.id},
 * {@code bootstrap.servers}, {@code processing.guarantee}, {@code commit.interval.ms},
 * {@code statestore.cache.max.bytes}, {@code state.dir}, ...), {@code group.protocol}
 * defaulting to {@code streams}.
 *
 * <p>Prints {@code kstate-reference: RUNNING} once the instance reaches RUNNING, and every
 * state change as {@code kstate-reference: state OLD -> NEW}. SIGTERM closes the instance
 * (shutdown hook, {@code close(30 s)}, then {@code kstate-reference: closed}) and the JVM
 * exits with 143; a fatal stream-thread error shuts the client down and the process exits 1.
 */
public final class StreamsReference {
    private static final String PREFIX = "kstate-reference: ";
    private static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(30);

    private StreamsReference() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> conf = new TreeMap<>();
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0) {
                usage("not a key=value pair: '" + arg + "'");
            }
            conf.put(arg.substring(0, eq), arg.substring(eq + 1));
        }
        String input = required(conf, "input");
        String output = required(conf, "output");
        String store = conf.getOrDefault("store", "counts");
        Duration gap = Duration.ofMillis(Long.parseLong(required(conf, "gap.ms")));
        Duration grace = Duration.ofMillis(Long.parseLong(required(conf, "grace.ms")));
        String retention = conf.get("retention.ms");
        for (String appKey :
                new String[] {"input", "output", "store", "gap.ms", "grace.ms", "retention.ms"}) {
            conf.remove(appKey);
        }
        required(conf, StreamsConfig.APPLICATION_ID_CONFIG);
        required(conf, StreamsConfig.BOOTSTRAP_SERVERS_CONFIG);

        Properties props = new Properties();
        props.put(StreamsConfig.GROUP_PROTOCOL_CONFIG, "streams");
        props.putAll(conf);

        Materialized<String, Long, SessionStore<Bytes, byte[]>> materialized =
                Materialized.as(store);
        if (retention != null) {
            materialized = materialized.withRetention(Duration.ofMillis(Long.parseLong(retention)));
        }
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.ByteArray()))
                .groupByKey()
                .windowedBy(SessionWindows.ofInactivityGapAndGrace(gap, grace))
                .count(materialized)
                .toStream()
                .to(output, Produced.with(
                        WindowedSerdes.sessionWindowedSerdeFrom(String.class), Serdes.Long()));
        Topology topology = builder.build(props);
        say("topology " + topology.describe().toString().replace('\n', ' '));
        say("config " + new TreeMap<>(conf));

        KafkaStreams streams = new KafkaStreams(topology, props);
        CountDownLatch closed = new CountDownLatch(1);
        int[] exitCode = {0};
        streams.setStateListener((newState, oldState) -> {
            say("state " + oldState + " -> " + newState);
            if (newState == KafkaStreams.State.RUNNING) {
                say("RUNNING");
            }
            if (newState == KafkaStreams.State.ERROR) {
                exitCode[0] = 1;
            }
            if (newState == KafkaStreams.State.NOT_RUNNING
                    || newState == KafkaStreams.State.ERROR) {
                closed.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println(PREFIX + "fatal: " + e);
            e.printStackTrace();
            exitCode[0] = 1;
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            say("closing");
            boolean clean = streams.close(CLOSE_TIMEOUT);
            say(clean ? "closed" : "close timed out");
            closed.countDown();
        }, "kstate-reference-shutdown"));

        streams.start();
        closed.await();
        if (exitCode[0] != 0) {
            streams.close(CLOSE_TIMEOUT);
            System.exit(exitCode[0]);
        }
    }

    private static String required(Map<String, String> conf, String key) {
        String value = conf.get(key);
        if (value == null || value.isEmpty()) {
            usage("missing " + key + "=...");
        }
        return value;
    }

    private static void usage(String problem) {
        System.err.println(PREFIX + problem);
        System.err.println("usage: StreamsReference input=T output=T gap.ms=N grace.ms=N "
                + "[store=S] application.id=A bootstrap.servers=H:P [streams config key=value ...]");
        System.exit(2);
    }

    private static void say(String line) {
        System.out.println(PREFIX + line);
        System.out.flush();
    }
}
