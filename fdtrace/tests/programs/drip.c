/* Leaks slowly next to a steady pool.
 * usage: drip DIR INTERVAL_MS
 *   opens a pool of 5 files once and keeps them (POOL: steady, "held"), then every INTERVAL_MS
 *   leaks one file (DRIP: "leaking") and opens and closes another (OK_DRIP), until killed. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int open_in(const char *dir, const char *name, int i) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s-%d", dir, name, i);
    return open(path, O_CREAT | O_RDWR, 0600);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *dir = argv[1];
    int interval_ms = atoi(argv[2]);
    int pool[5];
    for (int i = 0; i < 5; i++) pool[i] = open_in(dir, "pool", i); /* POOL */
    for (int i = 0;; i++) {
        int leaked = open_in(dir, "drip", i % 1000); /* DRIP */
        int ok = open_in(dir, "ok", 0); /* OK_DRIP */
        close(ok);
        (void)leaked;
        usleep(interval_ms * 1000);
    }
    (void)pool;
}
