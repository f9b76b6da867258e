// A minimal JavaScript task, run by `node` as the K2 task node runs webpacked tasks: the
// fork IPC channel comes from NODE_CHANNEL_FD, the contract's arguments from argv[2..11].
const http = require("http");

const [, , name, taskId, port, mode, mainKey, secret, k2Url, serviceUrl, stake, nodePort] =
  process.argv;

function call(args) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ args, taskId, secret });
    const req = http.request(
      { host: "127.0.0.1", port: Number(nodePort), path: "/namespace-wrapper", method: "POST",
        headers: { "Content-Type": "application/json" } },
      (res) => {
        let data = "";
        res.on("data", (chunk) => (data += chunk));
        res.on("end", () => resolve(JSON.parse(data)));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

process.on("message", async (message) => {
  if (message.functionCall === "submitPayload") {
    await call(["getCurrentSlot"]);
    await call(["checkSubmissionAndUpdateRound", `js ${name} ${message.roundNumber}`,
                message.roundNumber]);
  }
});

http.createServer((req, res) => res.end(JSON.stringify({ status: 200, message: "Running" })))
  .listen(Number(port));
