/* Creates descriptors in many ways, leaking some at known lines (LEAK_* markers) and closing
 * others correctly (OK_* markers), then prints "done" and waits to be killed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    for (int i = 0; i < 3; i++) {
        socket(AF_INET, SOCK_STREAM, 0); /* LEAK_SOCKET */
        int s = socket(AF_INET6, SOCK_DGRAM, 0); /* OK_SOCKET */
        close(s);
    }
    for (int i = 0; i < 2; i++) {
        int p[2];
        (void)!pipe(p); /* LEAK_PIPE */
        int q[2];
        (void)!pipe2(q, O_CLOEXEC); /* OK_PIPE2 */
        close(q[0]);
        close(q[1]);
    }
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv); /* LEAK_SOCKETPAIR */
    eventfd(0, EFD_CLOEXEC); /* LEAK_EVENTFD */
    epoll_create1(0); /* LEAK_EPOLL */
    int base = open("/dev/null", O_RDONLY); /* OK_BASE */
    dup(base); /* LEAK_DUP */
    fcntl(base, F_DUPFD_CLOEXEC, 100); /* LEAK_FCNTL */
    int victim = open("/dev/zero", O_RDONLY); /* OK_VICTIM */
    dup2(base, victim); /* LEAK_DUP2 */
    close(base);
    /* close_range over a block of descriptors made by dup2 at fixed high numbers. */
    int r = open("/dev/null", O_RDONLY); /* OK_RANGE */
    for (int i = 200; i < 205; i++) {
        dup2(r, i); /* OK_RANGE_DUP2 */
    }
    close(r);
    syscall(SYS_close_range, 200, 204, 0);
    /* accept4: a listener, a client and the accepted connection all stay open. */
    int l = socket(AF_INET, SOCK_STREAM, 0); /* LEAK_LISTEN */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    bind(l, (struct sockaddr *)&a, sizeof a);
    listen(l, 8);
    getsockname(l, (struct sockaddr *)&a, &alen);
    int c = socket(AF_INET, SOCK_STREAM, 0); /* LEAK_CLIENT */
    connect(c, (struct sockaddr *)&a, sizeof a);
    accept4(l, NULL, NULL, SOCK_CLOEXEC); /* LEAK_ACCEPT */
    printf("done\n");
    fflush(stdout);
    for (;;) {
        pause();
    }
}
