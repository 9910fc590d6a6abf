/**
 * Returns the content of the last `\boxed{...}` or `\fbox{...}` in `text`, matching braces so that
 * nested groups such as `\boxed{\frac{1}{2}}` come back whole. `\boxed 5` (no braces) yields the
 * token after the space. Returns undefined when there is no box or its braces never close.
 */
export function lastBoxed(text: string): string | undefined {
  const re = /\\(?:boxed|fbox)(?![a-zA-Z])/g;
  let start = -1;
  let end = -1;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    start = m.index;
    end = re.lastIndex;
  }
  if (start < 0) return undefined;
  let i = end;
  while (i < text.length && (text[i] === ' ' || text[i] === '\t')) i++;
  if (text[i] !== '{') {
    // `\boxed 5`: the answer runs to the next space, `$` or line end.
    const m = /^[^\s$]+/.exec(text.slice(i));
    return m ? m[0] : undefined;
  }
  const close = matchBrace(text, i);
  return close < 0 ? undefined : text.slice(i + 1, close);
}

/**
 * Index of the `}` that closes the `{` at `open`, skipping escaped braces (`\{`, `\}`); -1 if the
 * group never closes.
 */
export function matchBrace(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === '\\') {
      i++;
      continue;
    }
    if (c === '{') depth++;
    else if (c === '}' && --depth === 0) return i;
  }
  return -1;
}
