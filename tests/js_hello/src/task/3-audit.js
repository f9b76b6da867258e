// A peer's submission, checked as the example checks it: from the submitter's feed when it
// answers within FEED_WAIT_MS, else from IPFS by the CID; either way signed by the submitter
// over the submission's digest, and a proof that recomputes.
import WebSocket from "ws";
import { namespaceWrapper, TASK_ID } from "../task-manager/namespace-wrapper.js";
import { sha256Hex } from "../task-manager/rules.js";
import { FEED_WAIT_MS, stats } from "./feed.js";
import { DIFFICULTY, proofDigest, seed } from "./proof.js";

// The submission in a {signedMessage, submission} if `submitterKey` signed its digest.
async function openSigned(signed, submitterKey) {
  if (signed === null || typeof signed !== "object" || typeof signed.signedMessage !== "string") {
    return null;
  }
  const opened = await namespaceWrapper.verifySignature(signed.signedMessage, submitterKey);
  if (typeof opened?.data !== "string") return null;
  try {
    if (JSON.parse(opened.data) !== sha256Hex(JSON.stringify(signed.submission))) return null;
  } catch {
    return null;
  }
  return signed.submission;
}

async function fromFeed(submitterKey, roundNumber) {
  const state = await namespaceWrapper.getTaskState({});
  const base = state?.ip_address_list?.[submitterKey];
  if (typeof base !== "string" || !/^https?:\/\//.test(base)) return null;
  const url = `${base.replace(/\/+$/, "").replace(/^http/, "ws")}/task/${TASK_ID}/feed`;
  const item = await new Promise((resolve) => {
    const ws = new WebSocket(url, { handshakeTimeout: FEED_WAIT_MS });
    const finish = (value) => {
      clearTimeout(timer);
      ws.terminate();
      resolve(value);
    };
    const timer = setTimeout(() => finish(null), FEED_WAIT_MS);
    ws.on("message", (data, isBinary) => {
      let parsed = null;
      try {
        parsed = isBinary ? null : JSON.parse(data.toString());
      } catch {
        // not JSON: the feed says nothing useful
      }
      if (parsed === null || typeof parsed !== "object" || "caughtUp" in parsed) finish(null);
      else if (parsed.round === roundNumber) finish(parsed);
    });
    ws.on("error", () => finish(null));
    ws.on("close", () => finish(null));
  });
  return item === null ? null : openSigned(item, submitterKey);
}

async function fromIpfs(cid, roundNumber, submitterKey) {
  const raw = await namespaceWrapper.ipfsGet(cid, `submissionValues${roundNumber}.json`);
  if (raw === null) return null;
  try {
    return await openSigned(JSON.parse(raw.toString("utf8")), submitterKey);
  } catch {
    return null;
  }
}

export async function audit(submission, roundNumber, submitterKey) {
  let body = await fromFeed(submitterKey, roundNumber);
  if (body === null) body = await fromIpfs(submission, roundNumber, submitterKey);
  else stats.auditsFromFeed += 1;
  if (body === null || typeof body !== "object") return false; // unreachable or not theirs
  const nonce = Number(body.nonce);
  const digest = String(body.digest);
  return (
    body.round === roundNumber &&
    Number.isInteger(nonce) &&
    digest.startsWith(DIFFICULTY) &&
    proofDigest(seed(roundNumber), nonce) === digest
  );
}
