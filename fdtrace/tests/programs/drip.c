/* Leaks slowly next to a steady pool.
 * usage: drip DIR INTERVAL_MS
 *   opens a pool of 5 files once and keeps them (POOL: steady, "held"), then every INTERVAL_MS
 *   leaks one file (DRIP: "leaking") and opens and closes another (OK_DRIP), until killed. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *dir = argv[1];
    int interval_ms = atoi(argv[2]);
    char path[300];
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/pool-%d", dir, i);
        (void)open(path, O_CREAT | O_RDWR, 0600); /* POOL */
    }
    for (int i = 0;; i++) {
        snprintf(path, sizeof path, "%s/drip-%d", dir, i % 1000);
        (void)open(path, O_CREAT | O_RDWR, 0600); /* DRIP */
        snprintf(path, sizeof path, "%s/ok", dir);
        int ok = open(path, O_CREAT | O_RDWR, 0600); /* OK_DRIP */
        close(ok);
        usleep(interval_ms * 1000);
    }
}
