//! The guest's side of `cargo xtask bench --vm`: the shell functions its init script calls to
//! run each configuration and print its figures as `@@vmtest measured` lines (`vm.rs` writes
//! the script's calls and reads the lines back).

/// The shell functions that start nginx and run wrk against it, untraced or with fdtrace on the
/// worker (`$WORKER`), printing requests per second as an `@@vmtest measured` line.
pub(super) const RUN_NGINX: &str = r#"
nginx_start() {
  ip link set lo up
  /usr/sbin/nginx -p /nginx -e /nginx/error.log -c /nginx/nginx.conf \
    -g 'daemon off; master_process on; worker_processes 1;' 2>/nginx/stderr & NGINX=$!
  i=0
  while [ $i -lt 600 ]; do
    WORKER=$(tr -d ' ' < /proc/$NGINX/task/$NGINX/children 2>/dev/null)
    if [ -n "$WORKER" ] && wget -q -O /dev/null "$URL"; then return 0; fi
    sleep 0.1; i=$((i+1))
  done
  echo "nginx did not start:"; cat /nginx/stderr /nginx/error.log; return 1
}
wrk_only() {
  /usr/bin/wrk -t1 -c16 -d${WRK_SECS}s -H 'Connection: close' "$URL" > /tmp/wrk 2>&1
}
wrk_run() {
  sleep $SETTLE
  wrk_only
}
rps() { # the requests per second of the last wrk run
  rps=$(sed -n 's/^Requests\/sec: *//p' /tmp/wrk)
  [ -n "$rps" ] || cat /tmp/wrk
}
nginx_run() { # rep set
  rep=$1; set=$2
  if [ "$set" = - ]; then
    wrk_run
  else
    rm -f /tmp/n.json
    FDTRACE_HOOKS=$set /bin/fdtrace -q --json -o /tmp/n.json -p $WORKER 2>/tmp/err & f=$!
    if ready $f; then
      wrk_run
    else echo > /tmp/wrk; cat /tmp/err; fi
    kill -INT $f; wait $f
    lost $rep nginx $set /tmp/n.json
  fi
  rps
  echo "@@vmtest measured bench $rep nginx $set ${rps:-failed}"
}
nginx_untargeted() { # rep set: fdtrace traces a `sleep` while nginx serves: what a service
  # fdtrace does not trace pays for its hooks
  rep=$1; set=$2
  beside_sleep $set /tmp/wrk wrk_run
  rps
  echo "@@vmtest measured bench $rep nginx_untargeted $set ${rps:-failed}"
}
nginx_stopped() { # rep set stats: fdtrace on the worker, its process stopped (SIGSTOP) during
  # the run: the kernel side alone; with stats 1, each program's runs read around it
  rep=$1; set=$2
  rm -f /tmp/ns.json
  FDTRACE_HOOKS=$set /bin/fdtrace -q --ring-mb $NGINX_STOPPED_RING_MB --json -o /tmp/ns.json -p $WORKER 2>/tmp/err & f=$!
  if ready $f; then
    kill -STOP $f
    sleep $SETTLE
    [ $3 = 1 ] && prog_stats $set before nprogs
    wrk_only
    [ $3 = 1 ] && prog_stats $set after nprogs
    kill -CONT $f
  else echo > /tmp/wrk; cat /tmp/err; fi
  kill -INT $f; wait $f
  rps
  if [ $3 = 1 ]; then
    reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' /tmp/wrk)
    echo "@@vmtest measured nprogloop $set ${reqs:-failed}"
  else
    lost $rep nginx_stopped $set /tmp/ns.json
    echo "@@vmtest measured bench $rep nginx_stopped $set ${rps:-failed}"
  fi
}
"#;

/// The shell function that runs one case and prints its figure as an `@@vmtest measured` line.
pub(super) const RUN_CASE: &str = r#"
lost() { # rep what set json: the events fdtrace's report says it lost
  n=$(grep -o '"lost_events": *[0-9]*' $4 2>/dev/null | head -n 1 | grep -o '[0-9]*$')
  echo "@@vmtest measured lost $1 $2 $3 ${n:-unknown}"
}
ready() { # wait until fdtrace ($1) follows its ring buffer: it sleeps in epoll_wait
  i=0
  while [ $i -lt 3000 ]; do
    grep -q epoll /proc/$1/wchan 2>/dev/null && return 0
    kill -0 $1 2>/dev/null || return 1
    sleep 0.1; i=$((i+1))
  done
  return 1
}
beside_sleep() { # set out command...: run the command while fdtrace, with this hook set,
  # traces a `sleep` (the command's process is not its target); where fdtrace does not get to
  # tracing, an empty OUT and fdtrace's errors instead
  set=$1; out=$2; shift 2
  sleep 100000 & s=$!
  FDTRACE_HOOKS=$set /bin/fdtrace -q --json -o /tmp/u.json -p $s 2>/tmp/err & f=$!
  if ready $f; then "$@"; else echo > $out; cat /tmp/err; fi
  kill -INT $f; wait $f; kill $s; wait $s 2>/dev/null
}
loop_run() { /bench/openclose $loop > /tmp/out; }
case_run() { # rep case set
  rep=$1; what=$2; set=$3
  case $what in
  untraced) /bench/openclose -s $SETTLE $PAIRS > /tmp/out ;;
  floor)
    rm -f /tmp/fgo /tmp/fl; mkfifo /tmp/fgo
    eval "specs=\$FLOOR_$set"
    /bench/floor hooks $specs < /tmp/fgo > /tmp/fl 2>/tmp/err & f=$!
    exec 5>/tmp/fgo
    i=0
    while [ $i -lt 3000 ] && ! grep -q ready /tmp/fl && kill -0 $f 2>/dev/null; do
      sleep 0.1; i=$((i+1))
    done
    if grep -q ready /tmp/fl; then
      /bench/openclose -s $SETTLE $PAIRS > /tmp/out
    else echo > /tmp/out; cat /tmp/err; fi
    echo >&5; exec 5>&-; wait $f ;;
  reads) /bench/openclose -r -s $SETTLE $PAIRS /dev/zero > /tmp/out ;;
  untargeted|reads_untargeted)
    loop="-s $SETTLE $PAIRS"
    [ $what = reads_untargeted ] && loop="-r $loop /dev/zero"
    beside_sleep $set /tmp/out loop_run ;;
  traced)
    rm -f /tmp/t.json
    FDTRACE_HOOKS=$set /bin/fdtrace -q --json -o /tmp/t.json -- /bench/openclose -s $SETTLE $PAIRS > /tmp/out 2>/tmp/err || cat /tmp/err
    lost $rep $what $set /tmp/t.json ;;
  stopped)
    stopped_loop $set /tmp/s.json -
    echo "ns_per_pair $STOPPED_NS" > /tmp/out
    lost $rep $what $set /tmp/s.json ;;
  esac
  ns=$(sed -n 's/^ns_per_pair //p' /tmp/out)
  echo "@@vmtest measured bench $rep $what $set ${ns:-failed}"
}
floor_hooks() { # set: the hooks an open/close pair meets under fdtrace with this set, as
  # examples/floor takes them (tracepoint:CATEGORY:NAME, fentry:FUNCTION, fexit:FUNCTION)
  FDTRACE_HOOKS=$1 /bin/fdtrace hooks 2>/dev/null | awk '
    $1 == "openat" || $1 == "close" || $1 == "fd_install" {
      n = split($2, k, "+")
      for (i = 1; i <= n; i++) {
        if (k[i] == "tracepoint") {
          for (j = 3; j <= NF; j++) if ($j ~ /^[a-z0-9_]+:[a-z0-9_]+$/) print "tracepoint:" $j
        } else if (k[i] == "fentry" || k[i] == "fexit") print k[i] ":" $3
      }
    }' | tr '\n' ' '
}
prog_stats() { # set phase [tag]: each loaded program's run time and runs, as `progs` lines
  # (or `TAG` lines)
  /bench/prog_stats 2>/dev/null | while read id name t c; do
    echo "@@vmtest measured ${3:-progs} $1 $2 $id $name $t $c"
  done
}
stopped_loop() { # set json stats: the loop traced, fdtrace's process stopped (SIGSTOP) while it
  # runs: the kernel side alone; with stats 1, each program's runs read around it. Its time per
  # pair in STOPPED_NS. The shell waits in blocking reads of fifos, not in a polling loop whose
  # instructions the clock would count.
  rm -f /tmp/go /tmp/res $2; mkfifo /tmp/go /tmp/res
  /bench/openclose -w -s $SETTLE $STOPPED_PAIRS < /tmp/go > /tmp/res & p=$!
  exec 3>/tmp/go 4</tmp/res
  read r pid <&4
  FDTRACE_HOOKS=$1 /bin/fdtrace -q --ring-mb $STOPPED_RING_MB --json -o $2 -p $p 2>/tmp/err & f=$!
  if ready $f; then
    kill -STOP $f; [ $3 = 1 ] && prog_stats $1 before; echo >&3
    read k STOPPED_NS <&4; read k n <&4
    [ $3 = 1 ] && prog_stats $1 after; kill -CONT $f
  else STOPPED_NS=failed; cat /tmp/err; echo >&3; fi
  echo >&3; exec 3>&- 4<&-
  wait $p; kill -INT $f 2>/dev/null; wait $f
}
progs_run() { # set: the stopped loop once more, with BPF statistics on
  echo 1 > /proc/sys/kernel/bpf_stats_enabled
  stopped_loop $1 /tmp/p.json 1
  echo "@@vmtest measured progloop $1 $STOPPED_NS"
  echo 0 > /proc/sys/kernel/bpf_stats_enabled
}
"#;
