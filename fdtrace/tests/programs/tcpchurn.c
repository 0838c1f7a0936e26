/* TCP connections made and torn down in one process, some of them left behind in known states.
 * Lines are found by the tests through the markers in the comments.
 *
 * usage: tcpchurn ROUNDS
 *   Round i connects a client (CLIENT) to this process's own listener on 127.0.0.1 and accepts
 *   it (ACCEPTED), then by i % 4: 0, both ends closed (the kernel forgets both sockets); 1, the
 *   server's end closed, the client's kept (CLOSE_WAIT); 2, the client's end closed, the
 *   server's kept (CLOSE_WAIT); 3, both kept (ESTABLISHED). Connections torn down and kept
 *   alternate, so that kept sockets change state after others were forgotten.
 * Then prints "ready" and sleeps until killed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int rounds = atoi(argv[1]);
    int l = socket(AF_INET, SOCK_STREAM, 0); /* LISTENER */
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 64) != 0) die("listen");
    if (getsockname(l, (struct sockaddr *)&a, &len) != 0) die("getsockname");
    for (int i = 0; i < rounds; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0); /* CLIENT */
        if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
        int s = accept(l, NULL, NULL); /* ACCEPTED */
        if (s < 0) die("accept");
        switch (i % 4) {
        case 0:
            close(c);
            close(s);
            break;
        case 1:
            close(s);
            break;
        case 2:
            close(c);
            break;
        default:
            break;
        }
    }
    /* Let the last FINs and ACKs arrive. */
    usleep(300 * 1000);
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
