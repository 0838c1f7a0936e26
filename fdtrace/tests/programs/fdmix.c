/* A seeded random mix of the syscalls that create, copy, mark and destroy descriptors.
 * The tests trace it and compare fdtrace's model with /proc/PID/fd (and close-on-exec flags
 * with /proc/PID/fdinfo) exactly.
 *
 * usage: fdmix SEED OPS DIR
 *   runs OPS random operations (some in a second thread), lets a clone(CLONE_FILES) child open
 *   two files in the shared table and close one, then forks a child that execs
 *   `sleep 600` (inheriting what is not close-on-exec), prints "done CHILD_PID" and sleeps. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

static unsigned long long seed;
static __thread unsigned long long state;
static const char *dir;

static unsigned rnd(unsigned n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(state >> 33) % n;
}

/* A descriptor number to touch: never 0-2 (the report goes there); the low numbers the
 * kernel hands out first, and a few beyond. */
static int pick(void) { return 3 + rnd(45); }

static int open_some(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/f%u", dir, rnd(8));
    return open(path, O_CREAT | O_RDWR | (rnd(2) ? O_CLOEXEC : 0), 0600);
}

/* Put `fds` in the control data of `m` (one SCM_RIGHTS message). */
static void with_fds(struct msghdr *m, char *buf, size_t size, const int *fds, int n) {
    memset(buf, 0, size);
    m->msg_control = buf;
    m->msg_controllen = CMSG_SPACE(n * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, n * sizeof(int));
}

/* Pass descriptors to ourselves over a unix socket: recvmsg, or recvmmsg taking two messages
 * (three descriptors) at once. */
static void send_fds(void) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) != 0) return;
    int a = open_some(), b = eventfd(0, 0), c = memfd_create("passed", 0);
    char byte = 'x', buf1[CMSG_SPACE(2 * sizeof(int))], buf2[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr m1 = {.msg_iov = &iov, .msg_iovlen = 1};
    struct msghdr m2 = {.msg_iov = &iov, .msg_iovlen = 1};
    with_fds(&m1, buf1, sizeof buf1, (int[]){a, b}, 2);
    with_fds(&m2, buf2, sizeof buf2, (int[]){c}, 1);
    int flags = rnd(2) ? MSG_CMSG_CLOEXEC : 0;
    if (rnd(2)) {
        if (sendmsg(sv[0], &m1, 0) == 1) {
            char rbuf[CMSG_SPACE(2 * sizeof(int))];
            struct msghdr r = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = rbuf,
                               .msg_controllen = sizeof rbuf};
            recvmsg(sv[1], &r, flags);
        }
    } else if (sendmsg(sv[0], &m1, 0) == 1 && sendmsg(sv[0], &m2, 0) == 1) {
        char r1[CMSG_SPACE(2 * sizeof(int))], r2[CMSG_SPACE(2 * sizeof(int))];
        char b1, b2;
        struct iovec i1 = {.iov_base = &b1, .iov_len = 1}, i2 = {.iov_base = &b2, .iov_len = 1};
        struct mmsghdr mm[2] = {
            {.msg_hdr = {.msg_iov = &i1, .msg_iovlen = 1, .msg_control = r1,
                         .msg_controllen = sizeof r1}},
            {.msg_hdr = {.msg_iov = &i2, .msg_iovlen = 1, .msg_control = r2,
                         .msg_controllen = sizeof r2}},
        };
        recvmmsg(sv[1], mm, 2, flags, NULL);
    }
    close(a);
    close(b);
    close(c);
    if (rnd(2)) close(sv[0]);
    if (rnd(2)) close(sv[1]);
}

static void one_op(void) {
    int fd = -1, p[2];
    switch (rnd(22)) {
    case 0: case 1: case 2: fd = open_some(); break;
    case 3: case 4: close(pick()); break; /* often EBADF: must change nothing */
    case 5: fd = dup(pick()); break;
    case 6: dup2(pick(), pick()); break;
    case 7: dup3(pick(), pick(), O_CLOEXEC); break;
    case 8: fcntl(pick(), rnd(2) ? F_DUPFD : F_DUPFD_CLOEXEC, pick()); break;
    case 9: if (pipe2(p, rnd(2) ? O_CLOEXEC : 0) != 0) break; break;
    case 10: socketpair(AF_UNIX, SOCK_STREAM | (rnd(2) ? SOCK_CLOEXEC : 0), 0, p); break;
    case 11: eventfd(0, rnd(2) ? EFD_CLOEXEC : 0); break;
    case 12: epoll_create1(rnd(2) ? EPOLL_CLOEXEC : 0); break;
    case 13: timerfd_create(CLOCK_MONOTONIC, rnd(2) ? TFD_CLOEXEC : 0); break;
    case 14: inotify_init1(rnd(2) ? IN_CLOEXEC : 0); break;
    case 15: memfd_create("mix", rnd(2) ? MFD_CLOEXEC : 0); break;
    case 16: socket(rnd(2) ? AF_INET : AF_UNIX, SOCK_STREAM | (rnd(2) ? SOCK_CLOEXEC : 0), 0); break;
    case 17: fcntl(pick(), F_SETFD, rnd(2) ? FD_CLOEXEC : 0); break;
    case 18: ioctl(pick(), rnd(2) ? FIOCLEX : FIONCLEX); break;
    case 19: {
        unsigned first = pick(), len = rnd(6);
        syscall(SYS_close_range, first, first + len, rnd(3) == 0 ? CLOSE_RANGE_CLOEXEC : 0);
        break;
    }
    case 20: send_fds(); break;
    case 21: {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGUSR1);
        signalfd(-1, &s, rnd(2) ? SFD_CLOEXEC : 0);
        break;
    }
    }
    (void)fd;
}

static int ops_per_thread;
/* One operation at a time: the threads share one table, but neither closes a number the other
 * is being handed by the kernel at that moment (a race in a real program, whose outcome a
 * tracer that sees births at syscall exit cannot order). */
static pthread_mutex_t one_at_a_time = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *arg) {
    state = seed * 2654435761ULL + (unsigned long long)(long)arg;
    for (int i = 0; i < ops_per_thread; i++) {
        pthread_mutex_lock(&one_at_a_time);
        one_op();
        pthread_mutex_unlock(&one_at_a_time);
    }
    return NULL;
}

/* A child made with clone(CLONE_FILES) shares this process's table: what it opens and closes
 * is this process's. */
static int shared_child(void *arg) {
    (void)arg;
    int a = open_some();
    int b = open_some();
    close(a);
    (void)b;
    return 0;
}

static void clone_files(void) {
    static char stack[64 * 1024];
    pid_t c = clone(shared_child, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL);
    if (c > 0) waitpid(c, NULL, 0);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: fdmix SEED OPS DIR\n");
        return 2;
    }
    seed = strtoull(argv[1], NULL, 10);
    int ops = atoi(argv[2]);
    dir = argv[3];
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Half the work in this thread, half in another: threads share one table. Each draws from
     * their own seeded generator; the interleaving varies, which is fine: the kernel's table is
     * the truth either way. */
    ops_per_thread = ops / 2;
    pthread_t t;
    pthread_create(&t, NULL, worker, (void *)1);
    worker((void *)2);
    pthread_join(t, NULL);
    clone_files();
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/bin/sleep", "sleep", "600", (char *)NULL);
        _exit(127);
    }
    usleep(200 * 1000);
    printf("done %d\n", (int)child);
    for (;;) pause();
}
