/* The rarer syscalls that create descriptors, each leaking one at a marked line.
 * usage: rare DIR  -- prints "ok NAME" for each call that succeeded on this kernel (and
 * "skip NAME: why" for the others), then "done", and sleeps until killed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/landlock.h>
#include <linux/mount.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long fd) {
    if (fd >= 0)
        printf("ok %s\n", name);
    else
        printf("skip %s: %s\n", name, strerror(errno));
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    char path[300];
    snprintf(path, sizeof path, "%s/handle-target", argv[1]);
    close(open(path, O_CREAT | O_RDWR, 0600));

    /* open_by_handle_at: a handle for the file, then the file from its handle. */
    struct {
        struct file_handle h;
        unsigned char bytes[128];
    } fh = {.h = {.handle_bytes = 128}};
    int mount_id;
    if (name_to_handle_at(AT_FDCWD, path, &fh.h, &mount_id, 0) == 0) {
        int mfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        report("open_by_handle_at", open_by_handle_at(mfd, &fh.h, O_RDONLY)); /* R_HANDLE */
        close(mfd);
    } else {
        report("open_by_handle_at", -1);
    }
    report("fanotify_init", fanotify_init(FAN_CLASS_NOTIF, O_RDONLY)); /* R_FANOTIFY */
    report("memfd_secret", syscall(SYS_memfd_secret, 0)); /* R_SECRET */
    report("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC)); /* R_UFFD */
    struct perf_event_attr pa = {
        .type = PERF_TYPE_SOFTWARE, .size = sizeof pa, .config = PERF_COUNT_SW_CPU_CLOCK,
        .disabled = 1};
    report("perf_event_open", syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0)); /* R_PERF */
    union bpf_attr ba = {.map_type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4,
                         .max_entries = 1};
    report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &ba, sizeof ba)); /* R_BPF */
    int pidfd = syscall(SYS_pidfd_open, getpid(), 0);
    report("pidfd_getfd", syscall(SYS_pidfd_getfd, pidfd, 1, 0)); /* R_GETFD */
    close(pidfd);
    report("mq_open", mq_open("/fdtrace-rare", O_CREAT | O_RDWR, 0600, NULL)); /* R_MQ */
    mq_unlink("/fdtrace-rare");
    int fs = syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC); /* R_FSOPEN */
    report("fsopen", fs);
    if (fs >= 0 && syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
        report("fsmount", syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0)); /* R_FSMOUNT */
    else
        report("fsmount", -1);
    report("fspick", syscall(SYS_fspick, AT_FDCWD, "/", FSPICK_CLOEXEC)); /* R_FSPICK */
    report("open_tree", syscall(SYS_open_tree, AT_FDCWD, argv[1], OPEN_TREE_CLOEXEC)); /* R_TREE */
    struct landlock_ruleset_attr la = {.handled_access_fs = LANDLOCK_ACCESS_FS_READ_FILE};
    long ll = syscall(SYS_landlock_create_ruleset, &la, sizeof la, 0); /* R_LANDLOCK */
    report("landlock_create_ruleset", ll);
    printf("done\n");
    for (;;) pause();
}
