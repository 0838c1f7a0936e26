/* Busy descriptor churn with a known leak.
 * usage: churn DELAY_MS PAIRS LEAKS SPREAD_MS
 *   sleeps DELAY_MS, opens and closes /dev/null PAIRS times (at full speed, or spread evenly over
 *   SPREAD_MS), leaks LEAKS opens of /dev/zero (LEAK), prints "done" on stdout and waits to be
 *   killed. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void pause_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    long delay_ms = atol(argv[1]), pairs = atol(argv[2]), leaks = atol(argv[3]),
         spread_ms = atol(argv[4]);
    pause_ms(delay_ms);
    /* Spread: a pause every 1000 pairs. */
    long pauses = pairs / 1000;
    for (long i = 0; i < pairs; i++) {
        int fd = open("/dev/null", O_RDONLY);
        close(fd);
        if (spread_ms > 0 && pauses > 0 && i % 1000 == 999) pause_ms(spread_ms / pauses);
    }
    for (long i = 0; i < leaks; i++) {
        (void)open("/dev/zero", O_RDONLY); /* LEAK */
    }
    printf("done\n");
    fflush(stdout);
    for (;;) pause();
}
