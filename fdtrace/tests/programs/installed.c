/* Descriptors created by syscalls that have no birth hook: clone3's pidfd (CLONE_PIDFD) and a
 * namespace descriptor from ioctl(NS_GET_USERNS). fdtrace sees them on fd_install's trampoline
 * or, without trampolines, reports them as drift, never loses them.
 * usage: installed  -- prints "done" and sleeps until killed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/nsfs.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int pidfd = -1;
    struct clone_args args = {0};
    args.flags = CLONE_PIDFD;
    args.pidfd = (unsigned long)&pidfd;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args); /* I_CLONE3 */
    if (pid == 0) _exit(0);
    if (pid < 0 || pidfd < 0) return 1;
    waitpid(pid, NULL, 0);
    int ns = open("/proc/self/ns/uts", O_RDONLY);
    if (ns < 0) return 1;
    int user = ioctl(ns, NS_GET_USERNS); /* I_IOCTL */
    if (user < 0) return 1;
    printf("done\n");
    for (;;) pause();
}
