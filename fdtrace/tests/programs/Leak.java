// Leaks N files in openJournal and N connections in dial, and handles others correctly
// (readConfig closes its file; the server thread closes what it accepts). Calls each method
// often first, so the JIT compiles them; then prints "ready" and waits for a line on stdin
// (fdtrace attaches by pid meanwhile), leaks, prints "done" and waits again.
import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.ArrayList;
import java.util.List;

public class Leak {
    static final List<Object> kept = new ArrayList<>();

    static FileInputStream openJournal(String path) throws IOException {
        return new FileInputStream(path); // LEAK: file
    }

    static void readConfig(String path) throws IOException {
        try (FileInputStream f = new FileInputStream(path)) { // CLOSED
            f.read();
        }
    }

    static Socket dial(int port) throws IOException {
        return new Socket("127.0.0.1", port); // LEAK: socket
    }

    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]);
        ServerSocket server = new ServerSocket(0, 1000);
        Thread t = new Thread(() -> {
            while (true) {
                try {
                    server.accept().close();
                } catch (IOException e) {
                    return;
                }
            }
        });
        t.setDaemon(true);
        t.start();
        int port = server.getLocalPort();
        for (int i = 0; i < 20000; i++) {
            openJournal("/dev/null").close();
            readConfig("/dev/null");
        }
        for (int i = 0; i < 1500; i++) {
            dial(port).close();
        }
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        System.out.println("ready");
        in.readLine();
        for (int i = 0; i < n; i++) {
            kept.add(openJournal("/dev/null"));
            readConfig("/dev/null");
            kept.add(dial(port));
        }
        System.out.println("done");
        in.readLine();
    }
}
