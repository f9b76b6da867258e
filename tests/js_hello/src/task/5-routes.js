// The example's routes on the task's Express app, reached through the node at
// /task/<taskId>/...: the proof of a round, the feed (a WebSocket) and its audit count.
import { WebSocketServer } from "ws";
import { _server, app, namespaceWrapper } from "../task-manager/namespace-wrapper.js";
import { FEED_ROUNDS, listeners, stats } from "./feed.js";

// Express 4 leaves an async handler's failure unhandled, which would end the process.
function handled(route) {
  return (req, res) =>
    route(req, res).catch((err) => {
      console.error(`${req.path} failed:`, err);
      if (!res.headersSent) res.status(500).json({ message: String(err) });
    });
}

async function catchUp(ws) {
  const latest = await namespaceWrapper.getRound();
  for (let round = Math.max(0, latest - FEED_ROUNDS); round <= latest; round++) {
    const signed = await namespaceWrapper.storeGet(`signed:${round}`);
    if (signed !== null) ws.send(JSON.stringify({ round, ...signed }));
  }
  ws.send(JSON.stringify({ caughtUp: latest })); // then each new one as it is made
  if (ws.readyState === ws.OPEN) listeners.add(ws); // it may have gone meanwhile
}

export async function routes() {
  app.get(
    "/value",
    handled(async (_req, res) => {
      res.status(200).json({ value: await namespaceWrapper.storeGet("value") });
    }),
  );

  app.get(
    "/proof/:round",
    handled(async (req, res) => {
      const round = Number(req.params.round);
      if (!Number.isInteger(round)) {
        res.status(400).json({ message: "round must be an integer" });
        return;
      }
      res.json(await namespaceWrapper.storeGet(`result:${round}`));
    }),
  );

  app.get("/feed/stats", (_req, res) => res.json(stats));

  const feed = new WebSocketServer({ server: _server, path: "/feed" });
  feed.on("connection", (ws) => {
    ws.on("close", () => listeners.delete(ws));
    ws.on("error", () => listeners.delete(ws));
    catchUp(ws).catch((err) => {
      console.error("feed catch-up failed:", err);
      ws.terminate();
    });
  });
}
