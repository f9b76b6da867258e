// A JavaScript task offering a WebSocket endpoint on its Express-style port, with the `ws`
// package as template tasks use it: echoes text and binary, closes with 4001 when asked.
const http = require("http");
const { WebSocketServer } = require("ws");

const port = Number(process.argv[4]);
const server = http.createServer((req, res) =>
  res.end(JSON.stringify({ status: 200, message: "Running" })));
const sockets = new WebSocketServer({ server, path: "/feed" });
sockets.on("connection", (ws, request) => {
  ws.send(`hello ${request.headers["x-forwarded-for"] ? "via the node" : "direct"}`);
  ws.on("message", (data, isBinary) => {
    if (!isBinary && data.toString() === "close-me") ws.close(4001, "asked to");
    else ws.send(data, { binary: isBinary });
  });
});
server.listen(port);
process.on("message", () => {});
