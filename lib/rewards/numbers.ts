/**
 * Exact rational numbers for answer comparison. Answers are compared as rationals (BigInt numerator
 * and denominator) so that `0.5`, `1/2` and `\frac{1}{2}` are the same value and large integers such
 * as 120,006 vs 120,000 are never blurred by a floating-point tolerance.
 */

/** A reduced fraction `num / den` with `den > 0`. */
export type Rational = { num: bigint; den: bigint };

function gcd(a: bigint, b: bigint): bigint {
  if (a < 0n) a = -a;
  if (b < 0n) b = -b;
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

/** Builds a reduced rational; returns undefined for a zero denominator. */
export function rational(num: bigint, den: bigint): Rational | undefined {
  if (den === 0n) return undefined;
  if (den < 0n) {
    num = -num;
    den = -den;
  }
  const g = gcd(num, den);
  return g > 1n ? { num: num / g, den: den / g } : { num, den };
}

/**
 * Parses a plain decimal literal (`-12`, `1,234.50`, `.5`, `3.`) into a rational. Thousands
 * separators must be commas in groups of three. Returns undefined for anything else.
 */
export function parseDecimal(text: string): Rational | undefined {
  const m = /^([+-]?)(\d{1,3}(?:,\d{3})+|\d*)(?:\.(\d*))?$/.exec(text.trim().replace(/\u2212/g, '-'));
  if (!m) return undefined;
  const intPart = (m[2] ?? '').replace(/,/g, '');
  const frac = m[3] ?? '';
  if (intPart === '' && frac === '') return undefined;
  const digits = BigInt((intPart || '0') + frac);
  const den = 10n ** BigInt(frac.length);
  return rational(m[1] === '-' ? -digits : digits, den);
}

/** Divides two rationals; undefined when dividing by zero. */
export function divide(a: Rational, b: Rational): Rational | undefined {
  return rational(a.num * b.den, a.den * b.num);
}

/** True when the rational is a whole number. */
export function isInteger(r: Rational): boolean {
  return r.den === 1n;
}

/** The rational as the nearest double (fine for tolerance checks; exactness comes from BigInt). */
export function toNumber(r: Rational): number {
  // Scale down huge operands first so Number() does not overflow to Infinity / Infinity.
  const shift = (x: bigint) => (x < 0n ? -x : x).toString().length - 300;
  const s = Math.max(0, shift(r.num), shift(r.den));
  if (s > 0) {
    const p = 10n ** BigInt(s);
    return Number(r.num / p) / Number(r.den / p);
  }
  return Number(r.num) / Number(r.den);
}

/**
 * Compares two rationals: exactly when either is an integer (so 120,006 never equals 120,000),
 * otherwise by value with a relative tolerance.
 */
export function rationalsMatch(a: Rational, b: Rational, relTol: number): boolean {
  if (a.num === b.num && a.den === b.den) return true;
  if (isInteger(a) || isInteger(b)) return false;
  const x = toNumber(a);
  const y = toNumber(b);
  return Math.abs(x - y) <= relTol * Math.max(Math.abs(x), Math.abs(y));
}
