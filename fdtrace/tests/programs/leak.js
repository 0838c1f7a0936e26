// Leaks N files and N TCP sockets, each at one JavaScript line, and handles as many others
// correctly. The sockets connect to 127.0.0.1:PORT (the test's listener) and are created by
// libuv a tick after `net.connect` returns. Waits for a line on stdin before it starts (so
// fdtrace attaches to it by pid first), prints "done" once every socket has connected or
// closed.
'use strict';
const fs = require('fs');
const net = require('net');
const n = Number(process.argv[2] || 40);
const port = Number(process.argv[3]);
const kept = [];
const sockets = [];
let waiting = 0;

function openJournal(path) {
  return fs.openSync(path, 'r'); // LEAK: kept, never closed
}

function readConfig(path) {
  const fd = fs.openSync(path, 'r'); // CLOSED
  fs.closeSync(fd);
}

function subscribe(connected) {
  const s = net.connect(port, '127.0.0.1'); // LEAK: socket kept, never destroyed
  s.once('connect', connected);
  s.on('error', (e) => { throw e; });
  sockets.push(s);
}

function ping(closed) {
  const s = net.connect(port, '127.0.0.1', () => s.destroy()); // CLOSED socket
  s.once('close', closed);
  s.on('error', (e) => { throw e; });
}

let round = 0;
function settled() {
  waiting--;
  if (round >= n && waiting === 0) {
    process.stdout.write('done\n');
  }
}

function step() {
  // Several rounds, a few ms apart: the functions move between V8's tiers meanwhile.
  for (let k = 0; k < 10 && round < n; k++, round++) {
    kept.push(openJournal(__filename));
    readConfig(__filename);
    waiting += 2;
    subscribe(settled);
    ping(settled);
  }
  if (round < n) {
    setTimeout(step, 5);
  }
}

// Compile them once, so their code is in the perf map before fdtrace attaches. (The warm-up
// socket is open before tracing begins: not counted at a call site.)
fs.closeSync(openJournal(__filename));
readConfig(__filename);
subscribe(() => {});
ping(() => {});

process.stdin.once('data', () => step());
process.stdout.write('ready\n');
setInterval(() => {}, 1000);
