// The template's IPFS submission mode, as the example makes it: the CID of a folder holding
// submissionValues<round>.json, {signedMessage, submission}, the message being the signed
// sha256 of the submission's JSON; the same signed submission goes out on the feed.
import { namespaceWrapper } from "../task-manager/namespace-wrapper.js";
import { sha256Hex } from "../task-manager/rules.js";
import { publish } from "./feed.js";
import { task } from "./1-task.js";

async function result(roundNumber) {
  let found = await namespaceWrapper.storeGet(`result:${roundNumber}`);
  if (found === null) {
    // the work phase was missed (a restart, say): do it now
    await task(roundNumber);
    found = await namespaceWrapper.storeGet(`result:${roundNumber}`);
  }
  return found;
}

export async function submission(roundNumber) {
  const { nonce, digest } = await result(roundNumber);
  const body = { round: roundNumber, nonce, digest };
  const signedMessage = await namespaceWrapper.payloadSigning(sha256Hex(JSON.stringify(body)));
  if (typeof signedMessage !== "string") throw new Error("the node did not sign the submission");
  const signed = { signedMessage, submission: body };
  await namespaceWrapper.storeSet(`signed:${roundNumber}`, signed);
  publish({ round: roundNumber, ...signed });
  const file = `submissionValues${roundNumber}.json`;
  return namespaceWrapper.ipfsUpload({ [file]: JSON.stringify(signed) });
}
