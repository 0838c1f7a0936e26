/* Sockets over IPv4, IPv6 and unix, with known lines, addresses and TCP states.
 * Lines are found by the tests through the markers in the comments.
 *
 * usage: sockets UNIX_PATH
 *   - a child process (not traced) listens on 127.0.0.1, accepts N4 connections and closes
 *     them: the parent's client sockets (C4) go to CLOSE_WAIT in the child's context;
 *   - the parent listens on [::1] (L6), connects N6 clients (C6) and accepts them (A6 with
 *     accept4): all ESTABLISHED;
 *   - the parent listens on UNIX_PATH (LU), connects NU clients (CU) and accepts them (AU with
 *     accept);
 *   - a UDP socket (UDP) connected to 127.0.0.1:9;
 *   - a socket opened and closed correctly (OK_SOCKET).
 * Then prints "ready PORT4 PORT6 CHILD_PID" and sleeps until killed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define N4 5
#define N6 3
#define NU 2

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int tcp4_client(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0); /* C4 */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect4");
    return fd;
}

static int tcp6_client(int port) {
    int fd = socket(AF_INET6, SOCK_STREAM, 0); /* C6 */
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    a.sin6_addr = in6addr_loopback;
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect6");
    return fd;
}

static int unix_client(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0); /* CU */
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connectu");
    return fd;
}

static int port_of(int fd) {
    struct sockaddr_storage s;
    socklen_t len = sizeof s;
    if (getsockname(fd, (struct sockaddr *)&s, &len) != 0) die("getsockname");
    return s.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&s)->sin_port)
                                  : ntohs(((struct sockaddr_in6 *)&s)->sin6_port);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: sockets UNIX_PATH\n");
        return 2;
    }
    const char *upath = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* IPv4 server in a child process. */
    int l4 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a4 = {.sin_family = AF_INET};
    a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l4, (struct sockaddr *)&a4, sizeof a4) != 0 || listen(l4, 64) != 0) die("l4");
    int port4 = port_of(l4);
    int go[2];
    if (pipe(go) != 0) die("pipe");
    pid_t child = fork();
    if (child == 0) {
        char b;
        /* Die with the parent, and do not hold the tracer's output open. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 1);
        dup2(null, 2);
        /* Wait until the parent is connected, then accept and close everything. */
        if (read(go[0], &b, 1) != 1) _exit(1);
        for (int i = 0; i < N4; i++) {
            int c = accept(l4, NULL, NULL);
            if (c >= 0) close(c);
        }
        pause();
        _exit(0);
    }
    close(go[0]);
    close(l4);
    /* The parent was told to start by its tracer already (launch mode). */
    int c4[N4];
    for (int i = 0; i < N4; i++) c4[i] = tcp4_client(port4);
    (void)!write(go[1], "g", 1);
    close(go[1]);

    /* IPv6 listener, clients and accepted sockets in this process. */
    int l6 = socket(AF_INET6, SOCK_STREAM, 0); /* L6 */
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    a6.sin6_addr = in6addr_loopback;
    if (bind(l6, (struct sockaddr *)&a6, sizeof a6) != 0 || listen(l6, 64) != 0) die("l6");
    int port6 = port_of(l6);
    for (int i = 0; i < N6; i++) {
        tcp6_client(port6);
        int s = accept4(l6, NULL, NULL, SOCK_CLOEXEC); /* A6 */
        if (s < 0) die("accept4");
    }

    /* Unix listener, clients and accepted sockets. */
    unlink(upath);
    int lu = socket(AF_UNIX, SOCK_STREAM, 0); /* LU */
    struct sockaddr_un au = {.sun_family = AF_UNIX};
    snprintf(au.sun_path, sizeof au.sun_path, "%s", upath);
    if (bind(lu, (struct sockaddr *)&au, sizeof au) != 0 || listen(lu, 8) != 0) die("lu");
    for (int i = 0; i < NU; i++) {
        unix_client(upath);
        int s = accept(lu, NULL, NULL); /* AU */
        if (s < 0) die("accept");
    }

    int u = socket(AF_INET, SOCK_DGRAM, 0); /* UDP */
    struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(9)};
    d.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(u, (struct sockaddr *)&d, sizeof d) != 0) die("udp");

    int ok = socket(AF_INET, SOCK_STREAM, 0); /* OK_SOCKET */
    close(ok);

    /* Let the child's closes arrive: the C4 sockets reach CLOSE_WAIT. */
    usleep(300 * 1000);
    printf("ready %d %d %d\n", port4, port6, (int)child);
    (void)c4;
    for (;;) pause();
}
