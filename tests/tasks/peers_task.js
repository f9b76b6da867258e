// A JavaScript task reaching its peers with k2node's helper (k2node/task/peers.cjs, copied
// beside it): at each round's submission it asks every peer's /whoami at once, opens a
// WebSocket to each one's /echo, then submits; GET /reached serves what it found, round by
// round. Started as garbage.js, the same code answers /whoami with text that is not JSON.
const http = require("http");
const path = require("path");
const WebSocket = require("ws");
const { peerHelper, PeerError } = require("./peers.cjs");

const [, , , taskId, port, , , secret, , serviceUrl, , nodePort] = process.argv;
const garbage = path.basename(__filename) === "garbage.js";
const helper = peerHelper({ WebSocket });
const reached = {};

async function call(...args) {
  const res = await fetch(`http://127.0.0.1:${nodePort}/namespace-wrapper`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ args, taskId, secret }),
  });
  return (await res.json()).response;
}

const outcome = (err) => (err instanceof PeerError ? { error: err.reason } : { crash: String(err) });

function echoed(ws, text) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ error: "no echo" }), 1000);
    ws.once("message", (data) => {
      clearTimeout(timer);
      resolve({ ok: data.toString() });
    });
    ws.send(text);
  });
}

async function reachPeers(round) {
  const started = Date.now();
  const peers = await helper.peers();
  const socket = async (peer) => {
    try {
      const ws = await helper.peerWebSocket(peer, "echo", { timeoutMs: 1000 });
      const got = await echoed(ws, `ping ${round}`);
      ws.close();
      return [peer.stakingKey, got];
    } catch (err) {
      return [peer.stakingKey, outcome(err)];
    }
  };
  const [answers, sockets] = await Promise.all([
    helper.askPeers("whoami", { timeoutMs: 1000 }),
    Promise.all(peers.map(socket)),
  ]);
  const found = {};
  for (const [key, answer] of Object.entries(answers)) {
    found[key] = answer instanceof Error ? outcome(answer) : { ok: answer };
  }
  reached[round] = { took: Date.now() - started, answers: found, sockets: Object.fromEntries(sockets) };
}

process.on("message", async (message) => {
  if (message.functionCall !== "submitPayload") return;
  const round = message.roundNumber;
  try {
    await reachPeers(round);
  } catch (err) {
    reached[round] = { crash: String(err) };
  }
  await call("checkSubmissionAndUpdateRound", `peers ${round}`, round);
});

const server = http.createServer(async (req, res) => {
  res.setHeader("Content-Type", "application/json");
  if (req.url === "/whoami") {
    if (garbage) return res.end("<html>not json {{{");
    const state = await call("getTaskState", {});
    const me = Object.keys(state.ip_address_list).find((k) => state.ip_address_list[k] === serviceUrl);
    return res.end(JSON.stringify({ stakingKey: me }));
  }
  if (req.url === "/reached") return res.end(JSON.stringify(reached));
  res.end(JSON.stringify({ status: 200, message: "Running" }));
});
const sockets = new WebSocket.WebSocketServer({ server, path: "/echo" });
sockets.on("connection", (ws) => ws.on("message", (data) => ws.send(data.toString())));
server.listen(Number(port));
