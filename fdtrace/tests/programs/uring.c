/* Opens files through io_uring (IORING_OP_OPENAT): descriptors born without a syscall that
 * creates descriptors, which fdtrace must report as drift, not lose.
 * usage: uring DIR N  -- prints "done" and sleeps until killed. */
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int n = atoi(argv[2]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct io_uring ring;
    if (io_uring_queue_init(8, &ring, 0) != 0) return 1; /* URING_SETUP */
    for (int i = 0; i < n; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/uring-%d", argv[1], i);
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_openat(sqe, AT_FDCWD, path, O_CREAT | O_RDWR, 0600);
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&ring, &cqe) != 0 || cqe->res < 0) return 1;
        io_uring_cqe_seen(&ring, cqe);
    }
    printf("done\n");
    for (;;) pause();
}
