// A small stand-in for @_koii/namespace-wrapper 1.0.23 (not on the npm registry here): the
// same argv, Express app and local database, and the methods this task uses, each sent to
// the node's /namespace-wrapper with the wire name and argument shapes the wrapper uses.
import express from "express";
import Datastore from "nedb-promises";
import bs58 from "bs58";

// the contract's argv[2..11]: name, id, port, mode, main key, secret, K2 URL, service URL,
// stake, node port (those this task uses)
const TASK_NAME = process.argv[2] || "Local";
export const TASK_ID = process.argv[3];
const EXPRESS_PORT = parseInt(process.argv[4], 10) || 3000;
const SECRET_KEY = process.argv[7] || "";
const TASK_NODE_PORT = parseInt(process.argv[11], 10) || 0;
const BASE_ROOT_URL = `http://localhost:${TASK_NODE_PORT}/namespace-wrapper`;

if (!TASK_ID) {
  // the wrapper's local testing mode (a fake task state in memory) is not copied here
  console.error("this task runs under a node: it needs the node's arguments");
  process.exit(1);
}

export const app = express();
app.use(express.json({ limit: "50mb" }));
app.get("/", (_req, res) => res.json({ status: 200, message: "Running" }));
export const _server = app.listen(EXPRESS_PORT, () =>
  console.log(`${TASK_NAME} listening on port ${EXPRESS_PORT}`),
);

// The wrapper's PublicKey travels as its JSON form, the base58 string.
class PublicKey {
  constructor(bytes) {
    this.bytes = Uint8Array.from(bytes);
  }
  toBase58() {
    return bs58.encode(this.bytes);
  }
  toJSON() {
    return this.toBase58();
  }
}

async function genericHandler(...args) {
  try {
    const res = await fetch(BASE_ROOT_URL, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ args, taskId: TASK_ID, secret: SECRET_KEY }),
    });
    const data = await res.json();
    if (res.status === 200) return data.response;
    console.error(`namespace call ${args[0]} refused (${res.status}):`, data.message);
    return { error: data };
  } catch (err) {
    console.error(`namespace call ${args[0]} failed:`, String(err));
    return { error: String(err) };
  }
}

function failed(answer) {
  return answer !== null && typeof answer === "object" && "error" in answer;
}

class NamespaceWrapper {
  #db = null;

  async initializeDB() {
    if (this.#db === null) this.#db = Datastore.create(await this.getTaskLevelDBPath());
  }

  async getDb() {
    await this.initializeDB();
    return this.#db;
  }

  async storeGet(key) {
    const found = await (await this.getDb()).findOne({ key });
    return found ? found[key] : null;
  }

  async storeSet(key, value) {
    await (await this.getDb()).update({ key }, { [key]: value, key }, { upsert: true });
  }

  async getTaskLevelDBPath() {
    return genericHandler("getTaskLevelDBPath");
  }
  async getRpcUrl() {
    return genericHandler("getRpcUrl");
  }
  async defaultTaskSetup() {
    return genericHandler("defaultTaskSetup");
  }

  async getSlot() {
    return genericHandler("getCurrentSlot");
  }
  async getRound() {
    return genericHandler("getRound");
  }
  async getAverageSlotTime() {
    const answer = await genericHandler("getAverageSlotTime");
    return typeof answer === "number" ? answer : 400;
  }
  async getTaskState(options) {
    const answer = await genericHandler("getTaskState", options);
    return failed(answer) ? null : answer;
  }
  async getTaskSubmissionInfo(round) {
    const answer = await genericHandler("getTaskSubmissionInfo", round);
    return failed(answer) ? null : answer;
  }
  async getTaskDistributionInfo(round) {
    const answer = await genericHandler("getTaskDistributionInfo", round);
    return failed(answer) ? null : answer;
  }
  async getDistributionList(publicKey, round) {
    const answer = await genericHandler("getDistributionList", publicKey, round);
    return failed(answer) ? null : answer;
  }

  // The staking keypair, from the 64 secret-key bytes the node sends (the last 32 are the
  // public key, as in every ed25519 secret key).
  async getSubmitterAccount(taskType) {
    const answer = taskType
      ? await genericHandler("getSubmitterAccount", taskType)
      : await genericHandler("getSubmitterAccount");
    if (failed(answer) || !answer?._keypair?.secretKey) return null;
    const secretKey = Uint8Array.from(Object.values(answer._keypair.secretKey));
    return { publicKey: new PublicKey(secretKey.slice(32)), secretKey };
  }

  async payloadSigning(body) {
    return genericHandler("signData", body);
  }
  async verifySignature(signedMessage, pubKey) {
    return genericHandler("verifySignedData", signedMessage, pubKey);
  }

  async checkSubmissionAndUpdateRound(submissionValue, round) {
    return genericHandler("checkSubmissionAndUpdateRound", submissionValue, round);
  }
  // The voter's keypair is the wrapper's argument but never sent: the node votes with its own.
  async auditSubmission(candidatePubkey, isValid, _voterKeypair, round) {
    return genericHandler("auditSubmission", candidatePubkey, isValid, round);
  }
  async distributionListAuditSubmission(candidatePubkey, isValid, _voterKeypair, round) {
    return genericHandler("distributionListAuditSubmission", candidatePubkey, isValid, round);
  }
  async uploadDistributionList(distributionList, round) {
    return genericHandler("uploadDistributionList", distributionList, round);
  }
  async distributionListSubmissionOnChain(round) {
    return genericHandler("distributionListSubmissionOnChain", round);
  }
  async payoutTrigger(round) {
    return genericHandler("payloadTrigger", round);
  }

  // k2node's IPFS methods (extensions of the wire): bytes travel base64-encoded.
  async ipfsUpload(files, cidVersion = 0) {
    const encoded = Object.fromEntries(
      Object.entries(files).map(([name, data]) => [name, Buffer.from(data).toString("base64")]),
    );
    const answer = await genericHandler("ipfsUpload", encoded, cidVersion);
    return typeof answer === "string" ? answer : null;
  }
  async ipfsGet(cid, path = "", maxBytes = 1024 * 1024) {
    const answer = await genericHandler("ipfsGet", cid, path, maxBytes);
    return typeof answer === "string" ? Buffer.from(answer, "base64") : null;
  }
}

export const namespaceWrapper = new NamespaceWrapper();
