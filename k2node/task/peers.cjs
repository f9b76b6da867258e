// k2node's peer helper for JavaScript tasks: what a Python task's namespace gives it
// (peers(), peer_json, ask_peers, peer_websocket), for a task run by a k2node node.
//
//   const { peerHelper, PeerError } = require("./peers.cjs");   // or import ... from
//   const helper = peerHelper({ WebSocket: require("ws") });   // WebSocket: for peerWebSocket
//   for (const peer of await helper.peers()) ...               // {stakingKey, url}, not this node
//   await helper.peerJson(peer, "proof/3", { timeoutMs: 5000 });
//   await helper.askPeers("proof/3");                          // {stakingKey: answer | PeerError}
//   const ws = await helper.peerWebSocket(peer, "feed");       // an open `ws` WebSocket
//
// Peers are strangers: every call has a deadline that covers its retries (with backoff, on
// no answer or a 5xx), an answer is read up to a size limit, and a failure is a PeerError
// naming the peer and why, never a wait longer than the caller allowed. Node.js 18 or
// newer (fetch); no dependency of its own.
"use strict";

const BACKOFF_MS = 200;
const MAX_ANSWER_BYTES = 1024 * 1024;

class PeerError extends Error {
  constructor(peer, reason) {
    super(`peer ${String(peer.stakingKey).slice(0, 12)} (${String(peer.url).slice(0, 80)}): ${reason}`);
    this.name = "PeerError";
    this.peer = peer;
    this.reason = reason;
  }
}

class BadAnswer extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function taskUrl(peer, taskId, path) {
  return `${peer.url.replace(/\/+$/, "")}/task/${taskId}/${String(path).replace(/^\/+/, "")}`;
}

async function readLimited(res, maxBytes) {
  const declared = Number(res.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > maxBytes) {
    throw new BadAnswer(`answer of ${declared} bytes, over ${maxBytes}`);
  }
  const parts = [];
  let seen = 0;
  if (res.body === null) return Buffer.alloc(0);
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    seen += value.length;
    if (seen > maxBytes) {
      await reader.cancel();
      throw new BadAnswer(`answer over ${maxBytes} bytes`);
    }
    parts.push(value);
  }
  return Buffer.concat(parts);
}

// The helper for this task, from the node's arguments (argv[3] task id, argv[7] secret,
// argv[11] the node's port, as the contract gives them), or from `options`.
function peerHelper(options = {}) {
  const taskId = options.taskId ?? process.argv[3];
  const secret = options.secret ?? process.argv[7];
  const nodeUrl = options.nodeUrl ?? `http://127.0.0.1:${process.argv[11]}`;

  // The task's other nodes, staking key and base URL, as the node lists them (getPeers).
  async function peers() {
    const res = await fetch(`${nodeUrl}/namespace-wrapper`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ args: ["getPeers"], taskId, secret }),
    });
    const body = await res.json();
    if (res.status !== 200) throw new Error(`getPeers refused (${res.status}): ${body.message}`);
    return body.response;
  }

  // GET one of this task's routes on `peer` and decode its JSON.
  async function peerJson(peer, path, { timeoutMs = 5000, retries = 2, maxBytes = MAX_ANSWER_BYTES } = {}) {
    const deadline = Date.now() + timeoutMs;
    let reason = "no attempt";
    for (let attempt = 0; attempt <= retries; attempt += 1) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), left);
      try {
        const res = await fetch(taskUrl(peer, taskId, path), { signal: abort.signal, redirect: "manual" });
        if (res.status >= 500) {
          reason = `HTTP ${res.status}`;
          await res.body?.cancel();
        } else if (res.status !== 200) {
          await res.body?.cancel();
          throw new PeerError(peer, `HTTP ${res.status}`);
        } else {
          return JSON.parse((await readLimited(res, maxBytes)).toString("utf8"));
        }
      } catch (err) {
        if (err instanceof PeerError) throw err;
        if (err instanceof BadAnswer || err instanceof SyntaxError) {
          throw new PeerError(peer, `bad answer: ${String(err.message).slice(0, 120)}`);
        }
        reason = `no answer (${err.name})`;
      } finally {
        clearTimeout(timer);
      }
      if (attempt < retries) {
        const pause = BACKOFF_MS * 2 ** attempt * (0.5 + Math.random());
        await sleep(Math.max(0, Math.min(pause, deadline - Date.now())));
      }
    }
    throw new PeerError(peer, `${reason} within ${timeoutMs} ms`);
  }

  // Every peer's JSON at `path`, asked at once; a PeerError for each that failed.
  async function askPeers(path, { timeoutMs = 5000 } = {}) {
    const found = await peers();
    const answers = await Promise.all(
      found.map((peer) =>
        peerJson(peer, path, { timeoutMs }).catch((err) => {
          if (err instanceof PeerError) return err;
          throw err; // a bug of ours, not a peer's failure
        }),
      ),
    );
    return Object.fromEntries(found.map((peer, i) => [peer.stakingKey, answers[i]]));
  }

  // A WebSocket (the `ws` package's, given as options.WebSocket) to one of this task's
  // routes on `peer`, open within `timeoutMs`; the caller closes it.
  function peerWebSocket(peer, path, { timeoutMs = 5000, maxMessageBytes = MAX_ANSWER_BYTES } = {}) {
    const WebSocket = options.WebSocket;
    if (WebSocket === undefined) {
      throw new Error('peerWebSocket needs the ws package: peerHelper({ WebSocket: require("ws") })');
    }
    const url = taskUrl(peer, taskId, path).replace(/^http/, "ws");
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: timeoutMs, maxPayload: maxMessageBytes });
      const settle = () => {
        clearTimeout(timer);
        ws.removeListener("open", opened);
        ws.removeListener("unexpected-response", refused);
        ws.removeListener("error", broken);
      };
      const fail = (reason) => {
        settle();
        ws.on("error", () => {}); // what terminating it may still say
        ws.terminate();
        reject(new PeerError(peer, reason));
      };
      const opened = () => {
        settle(); // from here its errors and close are the caller's
        resolve(ws);
      };
      const refused = (_, res) => fail(`WebSocket refused (HTTP ${res.statusCode})`);
      const broken = (err) => fail(`no WebSocket (${err.code || err.message})`);
      const timer = setTimeout(() => fail(`no WebSocket within ${timeoutMs} ms`), timeoutMs);
      ws.on("open", opened);
      ws.on("unexpected-response", refused);
      ws.on("error", broken);
    });
  }

  return { peers, peerJson, askPeers, peerWebSocket };
}

module.exports = { peerHelper, PeerError };
