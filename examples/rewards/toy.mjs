// Reward functions for examples/grpo-tiny.json. A reward function takes
// { prompts, completions, completionIds, ...dataset columns } and returns one number (or null) per completion.

/** The fraction of a completion's characters that are digits: a dense signal a random model can climb. */
export function digits({ completions }) {
  return completions.map((c) => (c.length === 0 ? 0 : [...c].filter((ch) => ch >= '0' && ch <= '9').length / c.length));
}

/** 1 when the completion ends (has an end-of-turn) within the budget, else 0. */
export function ends({ completionIds }) {
  return completionIds.map((ids) => (ids.includes(101) || ids.includes(98) ? 1 : 0));
}
