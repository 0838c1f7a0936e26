/* A process that has leaked for a while before fdtrace arrives, and goes on leaking.
 * usage: late DIR FILES PIPES SOCKETS
 *   starts a server (a child process) that closes every connection it accepts, then leaks
 *   FILES files DIR/img-N.jpg (LEAK_FILE), PIPES pipes (LEAK_PIPE) and SOCKETS connections to
 *   the server, left in CLOSE_WAIT (LEAK_SOCKET); prints "ready PORT T" (T: CLOCK_MONOTONIC
 *   seconds when the pipes were made) and waits for a line on stdin; then leaks a tenth as many
 *   files and sockets again at the same lines, prints "done" and waits to be killed. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static int port;

static void leak_file(int i) {
    char path[512];
    snprintf(path, sizeof path, "%s/img-%d.jpg", dir, i);
    (void)open(path, O_CREAT | O_RDWR, 0600); /* LEAK_FILE */
}

static void leak_socket(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM, 0); /* LEAK_SOCKET */
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) perror("connect");
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    dir = argv[1];
    int files = atoi(argv[2]), pipes = atoi(argv[3]), sockets = atoi(argv[4]);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4096) ||
        getsockname(l, (struct sockaddr *)&a, &len))
        return 3;
    port = ntohs(a.sin_port);
    pid_t server = fork();
    if (server == 0) {
        /* The server goes with us. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;) {
            int c = accept(l, NULL, NULL);
            if (c >= 0) close(c);
        }
    }
    close(l);
    for (int i = 0; i < files; i++) leak_file(i);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    for (int i = 0; i < pipes; i++) {
        int p[2];
        (void)!pipe(p); /* LEAK_PIPE */
    }
    for (int i = 0; i < sockets; i++) leak_socket();
    printf("ready %d %ld.%09ld\n", port, (long)t.tv_sec, t.tv_nsec);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) {
        kill(server, SIGKILL);
        return 0;
    }
    for (int i = 0; i < files / 10; i++) leak_file(files + i);
    for (int i = 0; i < sockets / 10; i++) leak_socket();
    printf("done\n");
    fflush(stdout);
    for (;;) pause();
}
