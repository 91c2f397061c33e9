/**
 * Keeps one CPU out of its idle state for `--warm-cpus`: a lowest-priority busy loop that any
 * benchmark process preempts as soon as it wakes. It spins in 5 ms slices so it can notice its
 * stdin closing (how the runner stops it) and never outlives the runner.
 */
import { setPriority } from 'node:os';

try {
  setPriority(19);
} catch {
  // not allowed to lower it further: spin at the priority we have
}
process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
const spin = () => {
  const until = Date.now() + 5;
  while (Date.now() < until) {
    // busy
  }
  setImmediate(spin);
};
spin();
