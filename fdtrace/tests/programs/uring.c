/* Opens files through io_uring (IORING_OP_OPENAT): descriptors born without a syscall that
 * creates descriptors, which fdtrace sees on fd_install's trampoline or, without trampolines,
 * reports as drift, never loses. N files are created (io_uring runs creations in its worker
 * threads), then the first is opened again twice (a cached lookup: in the submitting thread,
 * where the kernel tries it first), and the second of those closed by io_uring too.
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
    char first[300];
    snprintf(first, sizeof first, "%s/uring-0", argv[1]);
    for (int k = 0; k < 2; k++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_openat(sqe, AT_FDCWD, first, O_RDONLY, 0);
        io_uring_submit(&ring); /* URING_REOPEN */
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&ring, &cqe) != 0 || cqe->res < 0) return 1;
        int fd = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        if (k == 0) continue;
        /* The second one is closed by io_uring too (IORING_OP_CLOSE). */
        sqe = io_uring_get_sqe(&ring);
        io_uring_prep_close(sqe, fd);
        io_uring_submit(&ring);
        if (io_uring_wait_cqe(&ring, &cqe) != 0 || cqe->res < 0) return 1;
        io_uring_cqe_seen(&ring, cqe);
    }
    printf("done\n");
    for (;;) pause();
}
