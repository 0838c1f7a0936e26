/* Holds as many descriptors as it may, up to a number, for a tracer to arrive late to.
 *
 *   hold N
 *
 * Raises its RLIMIT_NOFILE as far as it can (as root, the hard limit too, up to
 * /proc/sys/fs/nr_open), opens /dev/null until it holds N descriptors or the limit stops it
 * (HOLD), prints "ready HELD" with the number it holds in all (stdio included), then waits to
 * be killed. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    long want = atol(argv[1]);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t need = (rlim_t)want + 16;
    long nr_open = 0;
    FILE *f = fopen("/proc/sys/fs/nr_open", "r");
    if (f) {
        if (fscanf(f, "%ld", &nr_open) != 1) nr_open = 0;
        fclose(f);
    }
    if (rl.rlim_max < need && nr_open > 0) {
        struct rlimit up = {need < (rlim_t)nr_open ? need : (rlim_t)nr_open,
                            need < (rlim_t)nr_open ? need : (rlim_t)nr_open};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
    }
    rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
    setrlimit(RLIMIT_NOFILE, &rl);
    long held = 3;
    while (held < want) {
        if (open("/dev/null", O_RDONLY) < 0) /* HOLD */
            break;
        held++;
    }
    printf("ready %ld\n", held);
    fflush(stdout);
    for (;;) pause();
}
