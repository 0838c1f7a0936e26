// Leaks N files at one JavaScript line and handles others correctly; waits for a line on
// stdin before it starts (so fdtrace attaches to it by pid first), prints "done" after.
'use strict';
const fs = require('fs');
const n = Number(process.argv[2] || 40);
const kept = [];

function openJournal(path) {
  return fs.openSync(path, 'r'); // LEAK: kept, never closed
}

function readConfig(path) {
  const fd = fs.openSync(path, 'r'); // CLOSED
  fs.closeSync(fd);
}

// Compile both once, so their code is in the perf map before fdtrace attaches.
fs.closeSync(openJournal(__filename));
readConfig(__filename);

let round = 0;
function step() {
  // Several rounds, a few ms apart: the functions move between V8's tiers meanwhile.
  for (let k = 0; k < 10 && round < n; k++, round++) {
    kept.push(openJournal(__filename));
    readConfig(__filename);
  }
  if (round < n) {
    setTimeout(step, 5);
  } else {
    process.stdout.write('done\n');
  }
}

process.stdin.once('data', () => step());
process.stdout.write('ready\n');
setInterval(() => {}, 1000);
