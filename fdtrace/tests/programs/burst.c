/* Descriptor bursts from many threads, and a "too many open files" storm.
 *
 *   burst THREADS PAIRS LEAKS [FAILS]
 *
 * Raises its descriptor limit to hold the leaks, prints "ready", waits for a line on stdin (a
 * tracer attaches meanwhile), then starts THREADS threads at once. Each opens
 * and closes /dev/null PAIRS times at full speed, then leaks LEAKS opens of /dev/zero (LEAK).
 * With FAILS > 0, once every thread has leaked, the soft RLIMIT_NOFILE is lowered to just above
 * the highest descriptor open, and each thread tries FAILS more opens of /dev/zero (STORM):
 * each fails with EMFILE but those that find a free number below the limit. Prints
 * "done OPENED FAILED_EMFILE FAILED_OTHER NS" on stdout when every thread is done (NS: the
 * nanoseconds from the start of the threads to the end of the last), then waits to be killed. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long pairs, leaks, fails;
static pthread_barrier_t start, leaked, limited;
static long opened_total, emfile_total, other_total;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static long highest_fd(void) {
    long top = -1;
    for (int fd = 0; fd < 65536; fd++)
        if (fcntl(fd, F_GETFD) >= 0) top = fd;
    return top;
}

static void *worker(void *arg) {
    (void)arg;
    long opened = 0, emfile = 0, other = 0;
    pthread_barrier_wait(&start);
    for (long i = 0; i < pairs; i++) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd >= 0) close(fd);
    }
    for (long i = 0; i < leaks; i++) {
        if (open("/dev/zero", O_RDONLY) >= 0) /* LEAK */
            opened++;
    }
    /* Every thread's leaks are in before the limit is lowered and the storm begins. */
    if (fails > 0) {
        if (pthread_barrier_wait(&leaked) == PTHREAD_BARRIER_SERIAL_THREAD) {
            struct rlimit rl;
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = highest_fd() + 1;
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0) exit(1);
        }
        pthread_barrier_wait(&limited);
    }
    for (long i = 0; i < fails; i++) {
        int fd = open("/dev/zero", O_RDONLY); /* STORM */
        if (fd >= 0) {
            opened++;
        } else if (errno == EMFILE) {
            emfile++;
        } else {
            other++;
        }
    }
    pthread_mutex_lock(&lock);
    opened_total += opened;
    emfile_total += emfile;
    other_total += other;
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: burst THREADS PAIRS LEAKS [FAILS]\n");
        return 2;
    }
    long threads = atol(argv[1]);
    pairs = atol(argv[2]);
    leaks = atol(argv[3]);
    fails = argc > 4 ? atol(argv[4]) : 0;
    if (threads < 1 || threads > 1024) return 2;
    /* Descriptors inherited beyond stdio would leave holes below the lowered limit. */
    syscall(SYS_close_range, 3, ~0U, 0);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t need = (rlim_t)(threads * leaks + threads + 64);
    if (rl.rlim_cur < need) {
        if (rl.rlim_max < need) rl.rlim_max = need; /* root may raise it */
        rl.rlim_cur = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            perror("setrlimit");
            return 1;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    pthread_barrier_init(&start, NULL, threads);
    pthread_barrier_init(&leaked, NULL, threads);
    pthread_barrier_init(&limited, NULL, threads);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t *t = calloc(threads, sizeof *t);
    for (long i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, worker, NULL) != 0) return 1;
    for (long i = 0; i < threads; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    printf("done %ld %ld %ld %lld\n", opened_total, emfile_total, other_total, ns);
    fflush(stdout);
    for (;;) pause();
}
