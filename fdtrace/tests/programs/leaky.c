/* A program that leaks descriptors at known lines and handles them correctly at others.
 * Lines are found by the tests through the markers in the comments (LEAK_OPEN, ...).
 *
 * usage: leaky N [DELAY_MS] [LINGER_MS] [STEP_MS]
 *   waits DELAY_MS, then N times: leaks one open() file, opens and closes another correctly;
 *   every 4th round leaks a FILE* from fopen(); prints "done" and waits LINGER_MS (or until
 *   killed when LINGER_MS is 0). With STEP_MS, sleeps that long after each round, so the leaks
 *   grow gradually (default 0: all at once). With LEAKY_WAIT set, it then also waits for a line
 *   on stdin (sent once a tracer has attached). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[200];

static int leak_file(int i) {
    char path[256];
    snprintf(path, sizeof path, "%s/leak-%d.txt", dir, i);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600); /* LEAK_OPEN */
    if (fd >= 0) {
        (void)!write(fd, "x", 1);
    }
    return fd;
}

static void read_correctly(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/config.txt", dir);
    int fd = open(path, O_CREAT | O_RDONLY, 0600); /* OK_OPEN */
    if (fd >= 0) {
        close(fd);
    }
}

static FILE *leak_stream(int i) {
    char path[256];
    snprintf(path, sizeof path, "%s/stream-%d.log", dir, i);
    return fopen(path, "w"); /* LEAK_FOPEN */
}

static void stream_correctly(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/ok.log", dir);
    FILE *f = fopen(path, "a"); /* OK_FOPEN */
    if (f) {
        fputs("ok\n", f);
        fclose(f);
    }
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 40;
    int delay_ms = argc > 2 ? atoi(argv[2]) : 0;
    int linger_ms = argc > 3 ? atoi(argv[3]) : 0;
    int step_ms = argc > 4 ? atoi(argv[4]) : 0;
    const char *d = getenv("LEAKY_DIR");
    snprintf(dir, sizeof dir, "%s", d ? d : "/tmp");
    if (delay_ms > 0) {
        usleep(delay_ms * 1000);
    }
    if (getenv("LEAKY_WAIT")) {
        char b[64];
        (void)!read(0, b, sizeof b);
    }
    for (int i = 0; i < n; i++) {
        leak_file(i);
        read_correctly();
        stream_correctly();
        if (i % 4 == 0) {
            leak_stream(i);
        }
        if (step_ms > 0) {
            usleep(step_ms * 1000);
        }
    }
    printf("done\n");
    fflush(stdout);
    if (linger_ms > 0) {
        usleep(linger_ms * 1000);
    } else {
        for (;;) {
            pause();
        }
    }
    return 0;
}
