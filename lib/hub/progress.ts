// The download bar the CLI shows on a terminal: bytes, rate and the file being fetched.
import cliProgress from 'cli-progress';

import type { DownloadProgress } from './settings.js';

const MB = 1024 * 1024;

function bytes(n: number): string {
  if (n >= 1024 * MB) return `${(n / 1024 / MB).toFixed(2)} GB`;
  return n >= MB ? `${(n / MB).toFixed(1)} MB` : `${(n / 1024).toFixed(0)} kB`;
}

/**
 * A progress callback that draws a bar on stderr when it is a terminal (and `enabled`, and
 * HF_HUB_DISABLE_PROGRESS_BARS is not set), else does nothing; `stop()` clears the line. The rate is over the whole download, which smooths bursts.
 */
export function downloadProgressBar(enabled = true): { onProgress?: (p: DownloadProgress) => void; stop: () => void } {
  // HF_HUB_DISABLE_PROGRESS_BARS turns Python's bars off; it turns this one off too.
  const disabled = ['1', 'true', 'yes', 'on'].includes((process.env.HF_HUB_DISABLE_PROGRESS_BARS ?? '').toLowerCase());
  if (!enabled || disabled || !process.stderr.isTTY) return { stop: () => {} };
  const bar = new cliProgress.SingleBar(
    { format: 'download {repo} |{bar}| {done} / {all} | {rate}/s | {file}', hideCursor: true, clearOnComplete: true, stream: process.stderr },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let t0 = 0;
  let total = 0;
  return {
    onProgress: (p) => {
      if (!started || p.totalBytes !== total) {
        if (started) bar.stop();
        bar.start(p.totalBytes, 0, { repo: p.repo, done: bytes(0), all: bytes(p.totalBytes), rate: bytes(0), file: p.file });
        started = true;
        total = p.totalBytes;
        t0 = performance.now();
      }
      const seconds = Math.max((performance.now() - t0) / 1000, 1e-3);
      bar.update(p.bytes, { repo: p.repo, done: bytes(p.bytes), all: bytes(p.totalBytes), rate: bytes(p.bytes / seconds), file: p.file });
    },
    stop: () => {
      if (started) bar.stop();
      started = false;
    },
  };
}
