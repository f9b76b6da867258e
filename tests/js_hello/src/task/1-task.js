import { namespaceWrapper } from "../task-manager/namespace-wrapper.js";
import { findProof, KEEP_ROUNDS, seed } from "./proof.js";

export async function task(roundNumber) {
  const { nonce, digest } = findProof(seed(roundNumber));
  await namespaceWrapper.storeSet(`result:${roundNumber}`, { nonce, digest });
  await namespaceWrapper.storeSet("value", digest);
  if (roundNumber >= KEEP_ROUNDS) {
    // what audits and the feed may still ask for stays
    const db = await namespaceWrapper.getDb();
    const old = roundNumber - KEEP_ROUNDS;
    await db.remove({ key: `result:${old}` }, { multi: false });
    await db.remove({ key: `signed:${old}` }, { multi: false });
  }
}
