// The template's rules every node of a task computes alike (K2-CONTRACT.md, "Distribution"),
// as the namespace wrapper and the task manager compute them. No imports but Node.js's own,
// so a test can run this file as it is.
import { createHash } from "node:crypto";

export const AUDIT_SAMPLE_SIZE = 5;

export function sha256Hex(text) {
  return createHash("sha256").update(text).digest("hex");
}

// 1 with no audit trigger; else +1/-1 for each vote (a trigger without votes counts 0).
export function countVotes(trigger) {
  if (!trigger) return 1;
  return (trigger.votes ?? []).reduce((sum, vote) => sum + (vote.is_valid ? 1 : -1), 0);
}

// The submitters as a task's distribution rule receives them, in the submissions' order.
export function submittersOf(submissions, auditTriggers, stakeList) {
  return Object.keys(submissions).map((publicKey) => ({
    publicKey,
    votes: countVotes(auditTriggers?.[publicKey]),
    stake: stakeList?.[publicKey] ?? 0,
  }));
}

// min(5, n) distinct submitters at random, as the wrapper samples them.
export function auditSample(keys) {
  const chosen = new Set();
  while (chosen.size < Math.min(AUDIT_SAMPLE_SIZE, keys.length)) {
    chosen.add(keys[Math.floor(Math.random() * keys.length)]);
  }
  return [...chosen];
}

function score(text) {
  let sum = 0;
  for (let i = 0; i < text.length; i++) sum += text.charCodeAt(i);
  return sum;
}

// The key that submits round `round`'s distribution list ("" for nobody), from the task
// state's sections: the wrapper's nodeSelectionDistributionList, quirks included.
export function selectDistributionSubmitter(
  submissions,
  distributionRewardsSubmission,
  distributionsAuditRecord,
  round,
  isPreviousFailed,
) {
  const current = submissions?.[round];
  if (!current) return "";
  const keySets = [round, round - 1, round - 2]
    .filter((r) => r >= 0)
    .map((r) => new Set(Object.keys(submissions[r] ?? {})));
  let keys = [...keySets[0]].filter((key) => keySets.every((set) => set.has(key)));
  if (keys.length === 0) keys = Object.keys(current);
  const values = keys.map((key) => current[key]);
  if (distributionsAuditRecord?.[round] === "PayoutFailed") {
    for (const failed of Object.keys(distributionRewardsSubmission?.[round] ?? {})) {
      const at = keys.indexOf(failed);
      if (at !== -1) {
        keys.splice(at, 1);
        values.splice(at, 1);
      }
    }
  }
  const digestScore = score(sha256Hex(JSON.stringify(values)));
  const scores = keys.map((key, i) =>
    Math.abs(digestScore - score(sha256Hex(JSON.stringify({ [key]: values[i] })))),
  );
  let selected = "";
  if (isPreviousFailed) {
    let best = -Infinity;
    let second = -Infinity;
    scores.forEach((s, i) => {
      if (s > best) {
        second = best;
        best = s;
      } else if (s > second) {
        second = s;
        selected = keys[i];
      }
    });
  } else {
    let best = 0;
    scores.forEach((s, i) => {
      if (s > best) {
        best = s;
        selected = keys[i];
      }
    });
  }
  return selected;
}

// The last check before upload: a submitter missing, a value not an integer, or more than
// the round's bounty in all, and the list is all zeros.
export function safetyCheck(distribution, submissions, bountyPerRound) {
  const zeros = Object.fromEntries(Object.keys(submissions).map((key) => [key, 0]));
  if (Object.keys(submissions).some((key) => !(key in distribution))) return zeros;
  const values = Object.values(distribution);
  if (!values.every((value) => Number.isInteger(value))) return zeros;
  if (values.reduce((sum, value) => sum + value, 0) > bountyPerRound) return zeros;
  return distribution;
}

// A regenerated list against an uploaded one, key by key.
export function distributionMatches(expected, uploaded) {
  if (uploaded === null || typeof uploaded !== "object" || Array.isArray(uploaded)) return false;
  const keys = Object.keys(expected);
  if (Object.keys(uploaded).length !== keys.length) return false;
  return keys.every(
    (key) => key in uploaded && Number.isInteger(uploaded[key]) && uploaded[key] === expected[key],
  );
}
