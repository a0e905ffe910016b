import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaPairRDD;
import org.apache.spark.api.java.JavaSparkContext;
import scala.Tuple2;

/**
 * A Spark job with real shuffles, for the end-to-end test and the benchmark: N records in
 * P partitions, counted by key twice over (two shuffles, three stages), the second
 * stage's tasks slowed down so that an interruption lands mid-shuffle. Prints
 * `RESULT ok <records>` when every record was counted exactly once.
 *
 * Arguments: records, partitions, milliseconds each task of the middle stage takes.
 * Spark settings come from `-Dspark.*` system properties.
 */
public final class ReclaimShuffleJob {
    public static void main(String[] args) throws Exception {
        long records = Long.parseLong(args[0]);
        int partitions = Integer.parseInt(args[1]);
        long pauseMs = Long.parseLong(args[2]);
        try (JavaSparkContext sc = new JavaSparkContext(new SparkConf(true))) {
            List<Integer> ids = new ArrayList<>();
            for (int i = 0; i < partitions; i++) {
                ids.add(i);
            }
            long perPartition = records / partitions;
            JavaPairRDD<Long, Long> generated = sc.parallelize(ids, partitions)
                .flatMapToPair(p -> {
                    List<Tuple2<Long, Long>> out = new ArrayList<>();
                    for (long i = 0; i < perPartition; i++) {
                        out.add(new Tuple2<>((p * perPartition + i) % 10_000, 1L));
                    }
                    return out.iterator();
                });
            // First shuffle: counts per key; its map output lives on the executors.
            JavaPairRDD<Long, Long> perKey = generated.reduceByKey(Long::sum, partitions);
            // The middle stage reads that shuffle slowly, then shuffles again.
            JavaPairRDD<Long, Long> perBucket = perKey
                .mapPartitionsToPair(rows -> {
                    Thread.sleep(pauseMs);
                    List<Tuple2<Long, Long>> out = new ArrayList<>();
                    rows.forEachRemaining(kv -> out.add(new Tuple2<>(kv._1 % 10, kv._2)));
                    return out.iterator();
                })
                .reduceByKey(Long::sum, partitions);
            Map<Long, Long> buckets = perBucket.collectAsMap();
            long total = buckets.values().stream().mapToLong(Long::longValue).sum();
            long expected = perPartition * partitions;
            if (buckets.size() == 10 && total == expected) {
                System.out.println("RESULT ok " + total);
            } else {
                System.out.println("RESULT wrong " + total + " of " + expected + " in " + buckets.size() + " buckets");
                System.exit(2);
            }
        }
    }
}
