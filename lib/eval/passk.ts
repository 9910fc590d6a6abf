import { expected } from '../errors.js';

/**
 * The unbiased pass@k estimator of Chen et al. (2021): with `n` samples of which `c` are correct,
 * pass@k = 1 - C(n-c, k) / C(n, k). Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms
 * the huge binomials (C(200, 100) overflows a double's exact range long before it overflows it).
 *
 * @param n Samples drawn for the problem (>= 1).
 * @param c How many of them are correct (0..n).
 * @param k The k of pass@k (1..n).
 */
export function passAtK(n: number, c: number, k: number): number {
  if (!Number.isInteger(n) || n < 1) throw expected('a positive integer', 'n', n);
  if (!Number.isInteger(c) || c < 0 || c > n) throw expected(`an integer from 0 to n (${n})`, 'c', c);
  if (!Number.isInteger(k) || k < 1 || k > n) throw expected(`an integer from 1 to n (${n})`, 'k', k);
  // Fewer than k wrong samples: every draw of k contains a correct one.
  if (n - c < k) return 1;
  let allWrong = 1;
  for (let i = n - c + 1; i <= n; i++) allWrong *= 1 - k / i;
  return 1 - allWrong;
}

/** The mean of {@link passAtK} over problems, each given as `{ n, c }`. */
export function meanPassAtK(problems: readonly { n: number; c: number }[], k: number): number {
  if (problems.length === 0) throw expected('at least one problem', 'problems', problems);
  let sum = 0;
  for (const p of problems) sum += passAtK(p.n, p.c, k);
  return sum / problems.length;
}

/** The k values worth reporting for `n` samples: 1, powers of two below n, and n. */
export function defaultKs(n: number): number[] {
  const ks = new Set<number>([1]);
  for (let k = 2; k < n; k *= 2) ks.add(k);
  ks.add(n);
  return [...ks].sort((a, b) => a - b);
}
