// CPU time and peak memory of a child process, from Linux procfs (proc(5)).
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime of a process in microseconds (/proc/PID/stat fields 14 and 15, in clock ticks). */
export function cpuMicros(pid) {
  const t = cpuTimes(pid);
  return t.user + t.system;
}

/**
 * CPU time of all of a process's threads in microseconds, at nanosecond resolution (the first field of
 * /proc/PID/task/TID/schedstat). Clock ticks (10 ms) are too coarse for a helper such as nats-server, which spends
 * a few milliseconds in a short run and then reads as 0. Threads that exited during the run are not counted, which
 * suits Go's and Node's long-lived thread pools; falls back to clock ticks where schedstat is unavailable.
 */
export function preciseCpuMicros(pid) {
  let tids;
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return cpuMicros(pid);
  }
  let ns = 0;
  for (const tid of tids) {
    let text;
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8');
    } catch {
      continue; // the thread exited between the listing and the read
    }
    ns += Number(text.split(' ', 1)[0]);
  }
  // A kernel without schedstat reports nothing usable: use the coarse figure rather than 0.
  return Number.isFinite(ns) && ns > 0 ? ns / 1000 : cpuMicros(pid);
}

/** A process's user and system CPU time in microseconds: a proxy's socket work is mostly system time. */
export function cpuTimes(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: (Number(fields[11]) * 1e6) / CLK_TCK, system: (Number(fields[12]) * 1e6) / CLK_TCK };
}

/**
 * The whole machine's idle and total CPU ticks (first line of /proc/stat). Idle time during a run on a machine
 * that pgbench, PostgreSQL and the proxy share means someone waited on someone: with a single-threaded proxy,
 * usually on the proxy.
 */
export function machineTicks() {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user).
  const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
  return { idle: cpu[3] + cpu[4], total };
}

/** Peak resident set size in KiB (VmHWM in /proc/PID/status). */
export function peakRssKiB(pid) {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

/** Current resident set size in KiB (VmRSS). */
export function rssKiB(pid) {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}
