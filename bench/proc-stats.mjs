// CPU time and peak memory of a child process, from Linux procfs (proc(5)).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime of a process in microseconds (/proc/PID/stat fields 14 and 15, in clock ticks). */
export function cpuMicros(pid) {
  const t = cpuTimes(pid);
  return t.user + t.system;
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
