package dev.driftline.bench;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.LongAdder;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.TimestampExtractor;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Kafka Streams peer of driftline's benchmark feature: per key (user_id), a tumbling event-time
 * window (size and grace as driftline's spec) holding the count and the mean of {@code amount},
 * each update written as one JSON message to the output topic (as driftline writes one feature
 * vector per event). One stream thread, RocksDB window store with its changelog.
 *
 * <p>Arguments as key=value: bootstrap, input, output, app_id, guarantee (exactly_once_v2 |
 * at_least_once), state_dir, window_ms (60000), grace_ms (5000), cache_bytes (0: every update
 * is emitted, as driftline does; Kafka Streams' default is 10485760, which emits once per key
 * and commit), threads (1).
 *
 * <p>Prints "progress N T CPU" every 100 ms on stdout (events taken from the input so far, the
 * monotonic clock and this process's CPU time, both in seconds) and "state STATE" on each state
 * change; stops on SIGTERM.
 */
public final class WindowedCountMean {
  private WindowedCountMean() {}

  /** The fields of a synthetic event the computation reads; others are skipped. */
  @JsonIgnoreProperties(ignoreUnknown = true)
  public static final class Event {
    public long ts;
    public double amount;
  }

  /** Running count and sum of one key's window. */
  public static final class Agg {
    long count;
    double sum;
  }

  static final class EventDeserializer implements Deserializer<Event> {
    private final ObjectReader reader = new ObjectMapper().readerFor(Event.class);

    @Override
    public Event deserialize(String topic, byte[] data) {
      if (data == null) {
        return null;
      }
      try {
        return reader.readValue(data);
      } catch (IOException e) {
        throw new org.apache.kafka.common.errors.SerializationException(e);
      }
    }
  }

  static final class AggSerializer implements Serializer<Agg> {
    @Override
    public byte[] serialize(String topic, Agg a) {
      return a == null ? null : ByteBuffer.allocate(16).putLong(a.count).putDouble(a.sum).array();
    }
  }

  static final class AggDeserializer implements Deserializer<Agg> {
    @Override
    public Agg deserialize(String topic, byte[] data) {
      if (data == null) {
        return null;
      }
      ByteBuffer b = ByteBuffer.wrap(data);
      Agg a = new Agg();
      a.count = b.getLong();
      a.sum = b.getDouble();
      return a;
    }
  }

  /** Event time from the event's {@code ts} (epoch ms), as driftline's time_field. */
  static final class EventTime implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> rec, long partitionTime) {
      Object v = rec.value();
      return v instanceof Event e ? e.ts : Math.max(partitionTime, rec.timestamp());
    }
  }

  static Map<String, String> parse(String[] args) {
    Map<String, String> m = new HashMap<>();
    m.put("window_ms", "60000");
    m.put("grace_ms", "5000");
    m.put("cache_bytes", "0");
    m.put("threads", "1");
    for (String a : args) {
      int i = a.indexOf('=');
      if (i <= 0) {
        throw new IllegalArgumentException("expected key=value, got " + a);
      }
      m.put(a.substring(0, i), a.substring(i + 1));
    }
    for (String k : new String[] {"bootstrap", "input", "output", "app_id", "guarantee", "state_dir"}) {
      if (!m.containsKey(k)) {
        throw new IllegalArgumentException("missing " + k + "=...");
      }
    }
    return m;
  }

  public static void main(String[] args) throws InterruptedException {
    Map<String, String> a = parse(args);
    LongAdder seen = new LongAdder();
    Serde<Event> eventSerde = Serdes.serdeFrom(new Serializer<Event>() {
      @Override
      public byte[] serialize(String topic, Event e) {
        throw new UnsupportedOperationException("input only");
      }
    }, new EventDeserializer());
    Serde<Agg> aggSerde = Serdes.serdeFrom(new AggSerializer(), new AggDeserializer());

    StreamsBuilder b = new StreamsBuilder();
    b.stream(a.get("input"), Consumed.with(Serdes.String(), eventSerde)
            .withTimestampExtractor(new EventTime()))
        .peek((k, v) -> seen.increment())
        .groupByKey()
        .windowedBy(TimeWindows.ofSizeAndGrace(
            Duration.ofMillis(Long.parseLong(a.get("window_ms"))),
            Duration.ofMillis(Long.parseLong(a.get("grace_ms")))))
        .aggregate(Agg::new, (k, e, agg) -> {
          agg.count++;
          agg.sum += e.amount;
          return agg;
        }, Materialized.<String, Agg, WindowStore<Bytes, byte[]>>as("amount-count-mean")
            .withKeySerde(Serdes.String()).withValueSerde(aggSerde))
        .toStream()
        .map((wk, agg) -> KeyValue.pair(wk.key(),
            "{\"user_id\":\"" + wk.key() + "\",\"window_start_ms\":" + wk.window().start()
                + ",\"amount_count\":" + agg.count + ",\"amount_mean\":"
                + (agg.sum / agg.count) + "}"))
        .to(a.get("output"), Produced.with(Serdes.String(), Serdes.String()));

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.get("app_id"));
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("bootstrap"));
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, a.get("guarantee"));
    p.put(StreamsConfig.STATE_DIR_CONFIG, a.get("state_dir"));
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(a.get("threads")));
    p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, Long.parseLong(a.get("cache_bytes")));
    p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

    PrintStream out = System.out;
    KafkaStreams streams = new KafkaStreams(b.build(), p);
    CountDownLatch done = new CountDownLatch(1);
    streams.setStateListener((now, before) -> {
      synchronized (out) {
        out.println("state " + now);
        out.flush();
      }
      if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
        done.countDown();
      }
    });
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close(Duration.ofSeconds(20));
      done.countDown();
    }));
    com.sun.management.OperatingSystemMXBean os =
        (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
    Thread progress = new Thread(() -> {
      while (true) {
        synchronized (out) {
          out.println("progress " + seen.sum() + " " + System.nanoTime() / 1e9 + " "
              + os.getProcessCpuTime() / 1e9);
          out.flush();
        }
        try {
          Thread.sleep(100);
        } catch (InterruptedException e) {
          return;
        }
      }
    }, "progress");
    progress.setDaemon(true);
    progress.start();
    streams.start();
    done.await();
    System.exit(streams.state() == KafkaStreams.State.ERROR ? 1 : 0);
  }
}
