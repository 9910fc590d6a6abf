// Long native calls run off the event loop.
import { afterAll, expect, it } from 'vitest';

import { createTinyModel, type LladaModel } from '../../lib/index.js';

let model: LladaModel;
afterAll(() => model?.dispose());

it('a forward pass does not block the event loop', async () => {
  model = await createTinyModel({ seed: 1 });
  const ids = Array.from({ length: 4 }, (_, b) => Array.from({ length: 256 }, (_, t) => (b * 7 + t * 13) % 96));
  let turns = 0;
  let running = true;
  const tick = () => {
    turns++;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  const start = performance.now();
  await model.logits(ids);
  const ms = performance.now() - start;
  running = false;
  // The call takes tens of milliseconds; a blocked loop would see at most a couple of turns.
  expect(ms).toBeGreaterThan(5);
  expect(turns).toBeGreaterThan(10);
});
