package walstream.bench;

import java.lang.management.ManagementFactory;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import com.sun.management.OperatingSystemMXBean;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;

/**
 * The Debezium peer of bench/run.py: the embedded engine with the PostgreSQL connector (pgoutput) drains an
 * existing slot, counts change records until it has the expected number, and prints one line of JSON.
 *
 * <p>Usage: {@code java -cp 'debezium-bench.jar:lib/*' walstream.bench.DebeziumBench HOST PORT USER DB SLOT
 * PUBLICATION ROWS TIMEOUT_S}. Times are from the engine's {@code taskStarted} callback (the connector task is
 * configured and about to stream) to the last expected record; start-up (JVM start to taskStarted) is reported
 * apart, and so is the CPU this process used in each part.
 */
public final class DebeziumBench {
    private DebeziumBench() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 8) {
            System.err.println("usage: DebeziumBench HOST PORT USER DB SLOT PUBLICATION ROWS TIMEOUT_S");
            System.exit(2);
        }
        long expected = Long.parseLong(args[6]);
        long timeoutSeconds = Long.parseLong(args[7]);
        OperatingSystemMXBean os = (OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        long jvmStartMillis = ManagementFactory.getRuntimeMXBean().getStartTime();

        Properties props = new Properties();
        props.setProperty("name", "walstream-bench");
        props.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
        props.setProperty("plugin.name", "pgoutput");
        props.setProperty("database.hostname", args[0]);
        props.setProperty("database.port", args[1]);
        props.setProperty("database.user", args[2]);
        props.setProperty("database.password", "");
        props.setProperty("database.dbname", args[3]);
        props.setProperty("slot.name", args[4]);
        props.setProperty("slot.drop.on.stop", "false");
        props.setProperty("publication.name", args[5]);
        props.setProperty("publication.autocreate.mode", "disabled");
        props.setProperty("snapshot.mode", "no_data");
        props.setProperty("topic.prefix", "bench");
        props.setProperty("offset.storage", "org.apache.kafka.connect.storage.MemoryOffsetBackingStore");
        props.setProperty("offset.flush.interval.ms", "1000");
        props.setProperty("converter.schemas.enable", "false");

        AtomicLong rows = new AtomicLong();
        AtomicLong taskStarted = new AtomicLong();
        AtomicLong firstRecord = new AtomicLong();
        AtomicLong lastRecord = new AtomicLong();
        AtomicLong cpuAtTaskStart = new AtomicLong();
        AtomicLong cpuAtLast = new AtomicLong();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        CountDownLatch done = new CountDownLatch(1);

        DebeziumEngine.ChangeConsumer<ChangeEvent<String, String>> consumer = (records, committer) -> {
            for (ChangeEvent<String, String> record : records) {
                if (record.value() != null) { // a delete's tombstone carries no change
                    long n = rows.incrementAndGet();
                    if (n == 1) {
                        firstRecord.set(System.nanoTime());
                    }
                    if (n == expected) {
                        lastRecord.set(System.nanoTime());
                        cpuAtLast.set(os.getProcessCpuTime());
                        done.countDown();
                    }
                }
                committer.markProcessed(record);
            }
            committer.markBatchFinished();
        };

        DebeziumEngine<ChangeEvent<String, String>> engine = DebeziumEngine.create(Json.class)
                .using(props)
                .using(new DebeziumEngine.ConnectorCallback() {
                    @Override
                    public void taskStarted() {
                        taskStarted.compareAndSet(0, System.nanoTime());
                        cpuAtTaskStart.compareAndSet(0, os.getProcessCpuTime());
                    }
                })
                .using((success, message, error) -> {
                    if (!success) {
                        failure.set(error != null ? error : new IllegalStateException(message));
                    }
                    done.countDown();
                })
                .notifying(consumer)
                .build();

        long startNanos = System.nanoTime();
        long startupMillisBeforeMain = System.currentTimeMillis() - jvmStartMillis;
        ExecutorService executor = Executors.newSingleThreadExecutor();
        executor.execute(engine);
        boolean finished = done.await(timeoutSeconds, TimeUnit.SECONDS);
        long endNanos = System.nanoTime();
        engine.close();
        executor.shutdown();
        executor.awaitTermination(60, TimeUnit.SECONDS);

        long got = rows.get();
        if (failure.get() != null || !finished || got < expected) {
            String why = failure.get() != null ? String.valueOf(failure.get())
                    : finished ? "the engine stopped" : "timed out after " + timeoutSeconds + " s";
            System.err.println("debezium: got " + got + " of " + expected + " change records: " + why);
            System.exit(1);
        }
        double started = taskStarted.get() == 0 ? startNanos : taskStarted.get();
        double seconds = (lastRecord.get() - started) / 1e9;
        double startupSeconds = startupMillisBeforeMain / 1e3 + (started - startNanos) / 1e9;
        double cpuStartup = cpuAtTaskStart.get() / 1e9;
        double cpuDrain = (cpuAtLast.get() - cpuAtTaskStart.get()) / 1e9;
        List<String> fields = List.of(
                "\"rows\": " + got,
                "\"seconds\": " + seconds,
                "\"first_seconds\": " + (firstRecord.get() - started) / 1e9,
                "\"startup_seconds\": " + startupSeconds,
                "\"consumer_cpu\": " + cpuDrain,
                "\"startup_cpu\": " + cpuStartup,
                "\"close_seconds\": " + (System.nanoTime() - endNanos) / 1e9);
        System.out.println("{" + String.join(", ", fields) + "}");
        System.out.flush();
        System.exit(0);
    }
}
