/* Runs out of descriptors: lowers RLIMIT_NOFILE to 64, then leaks files at one line until
 * open() fails with EMFILE ("too many open files"), and keeps trying a few more times.
 * usage: emfile DIR  -- prints "done OPENED FAILED" and sleeps until killed. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    struct rlimit rl = {.rlim_cur = 64, .rlim_max = 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int opened = 0, failed = 0;
    for (int i = 0; i < 100; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/f%d", argv[1], i);
        int fd = open(path, O_CREAT | O_WRONLY, 0600); /* LEAK_UNTIL_FULL */
        if (fd >= 0) opened++; else failed++;
    }
    printf("done %d %d\n", opened, failed);
    for (;;) pause();
}
