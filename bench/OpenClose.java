// Benchmark load for `cargo xtask bench` (case 12): the open/close loop of bench/openclose.c in
// Java.
//
//   java OpenClose PAIRS [PATH]
//
// Runs the loop once untimed (so the JIT compiles it, as a service's hot path is), then opens
// and closes PATH (default /dev/null) PAIRS times with FileInputStream and prints the time per
// pair, measured around the loop only; then opens PATH once more in the loop's method and keeps
// it (one leak, so the tracer's report shows which frames it named):
//
//   ns_per_pair 1812.3
//   pairs 50000
import java.io.FileInputStream;
import java.io.IOException;

public class OpenClose {
    static Object kept;

    static double loop(int pairs, String path) throws IOException {
        long t0 = System.nanoTime();
        for (int i = 0; i < pairs; i++) {
            new FileInputStream(path).close();
        }
        long t1 = System.nanoTime();
        kept = new FileInputStream(path); // the one leak
        return (double) (t1 - t0) / pairs;
    }

    public static void main(String[] args) throws Exception {
        int pairs = Integer.parseInt(args[0]);
        String path = args.length > 1 ? args[1] : "/dev/null";
        loop(pairs, path);
        ((FileInputStream) kept).close();
        double ns = loop(pairs, path);
        System.out.printf("ns_per_pair %.1f%n", ns);
        System.out.printf("pairs %d%n", pairs);
    }
}
