/* Benchmark load for `cargo xtask bench`: a tight open/close loop.
 *
 *   openclose [-w] [-r] [-s SECS] [-k HELD] PAIRS [PATH]
 *
 * Opens and closes PATH (default /dev/null) PAIRS times and prints the time per pair, measured
 * with clock_gettime(CLOCK_MONOTONIC) around the loop only (start-up and any tracer attach are
 * not counted):
 *
 *   ns_per_pair 812.3
 *   pairs 500000
 *
 * -k HELD  first open HELD descriptors and keep them open until exit.
 * -r       read instead: a pair is two one-byte read(2)s of PATH, opened once (syscalls fdtrace
 *          does not hook, for what a tracer costs the rest of a process's syscalls).
 * -s SECS  sleep SECS seconds before the loop (the kernel's deferred work after a tracer attached
 *          or detached, such as RCU callbacks, runs then rather than during the loop).
 * -w       print "ready PID" and wait for a line on stdin before the loop, and again after it
 *          (so a tracer can attach before, and be inspected after, the measured loop).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void wait_line(void) {
  char buf[64];
  if (!fgets(buf, sizeof buf, stdin)) {
    /* stdin closed: go on. */
  }
}

static void usage(void) {
  fprintf(stderr, "usage: openclose [-w] [-r] [-s SECS] [-k HELD] PAIRS [PATH]\n");
  exit(2);
}

int main(int argc, char **argv) {
  int wait = 0;
  long held = 0;
  long settle = 0;
  int reads = 0;
  int opt;
  while ((opt = getopt(argc, argv, "wrs:k:")) != -1) {
    switch (opt) {
    case 'w':
      wait = 1;
      break;
    case 'k':
      held = strtol(optarg, NULL, 10);
      break;
    case 'r':
      reads = 1;
      break;
    case 's':
      settle = strtol(optarg, NULL, 10);
      break;
    default:
      usage();
    }
  }
  if (optind >= argc) usage();
  long pairs = strtol(argv[optind], NULL, 10);
  const char *path = optind + 1 < argc ? argv[optind + 1] : "/dev/null";
  if (pairs <= 0 || held < 0 || settle < 0) usage();

  if (held > 0) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)held + 64) {
      rl.rlim_cur = rl.rlim_max < (rlim_t)held + 64 ? rl.rlim_max : (rlim_t)held + 64;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    for (long i = 0; i < held; i++) {
      if (open(path, O_RDONLY) < 0) {
        perror("open (held)");
        return 1;
      }
    }
  }
  if (wait) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    wait_line();
  }
  int rfd = -1;
  if (reads && (rfd = open(path, O_RDONLY)) < 0) {
    perror("open");
    return 1;
  }
  if (settle > 0) sleep((unsigned)settle);
  double t0 = now_ns();
  for (long i = 0; reads && i < pairs; i++) {
    char c[2];
    if (read(rfd, &c[0], 1) < 0 || read(rfd, &c[1], 1) < 0) {
      perror("read");
      return 1;
    }
  }
  for (long i = 0; !reads && i < pairs; i++) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
      perror("open");
      return 1;
    }
    close(fd);
  }
  double t1 = now_ns();
  printf("ns_per_pair %.1f\npairs %ld\n", (t1 - t0) / (double)pairs, pairs);
  fflush(stdout);
  if (wait) wait_line();
  return 0;
}
