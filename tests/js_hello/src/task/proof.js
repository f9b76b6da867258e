// The example's proof of work, as k2node/examples/hello_task.py computes it: the first nonce
// whose sha256("<task id>:<round>:<nonce>") starts with DIFFICULTY.
import { createHash } from "node:crypto";
import { TASK_ID } from "../task-manager/namespace-wrapper.js";

export const DIFFICULTY = "000";
export const KEEP_ROUNDS = 10; // results older than this many rounds are deleted

export function seed(round) {
  return `${TASK_ID}:${round}`;
}

export function proofDigest(seedText, nonce) {
  return createHash("sha256").update(`${seedText}:${nonce}`).digest("hex");
}

export function findProof(seedText) {
  for (let nonce = 0; ; nonce++) {
    const digest = proofDigest(seedText, nonce);
    if (digest.startsWith(DIFFICULTY)) return { nonce, digest };
  }
}
