// A JavaScript task that forks without end (bounded) as it starts and spins one executeTask
// on the CPU (once: its folder remembers), to show the node holds it to the same limits as
// a Python task; it submits like js_task.js. Outcomes go to its output (task.log) as
// `PRY <what> <outcome>`.
const { spawn } = require("child_process");
const fs = require("fs");
const http = require("http");
const path = require("path");

const [, , name, taskId, port, , , secret, , , , nodePort] = process.argv;
const FORKS_AT_MOST = 300; // the bomb stops by itself, limit or not
const SPIN_CPU_MS = 15000; // so does the spin

function call(args) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ args, taskId, secret });
    const req = http.request(
      { host: "127.0.0.1", port: Number(nodePort), path: "/namespace-wrapper", method: "POST",
        headers: { "Content-Type": "application/json" } },
      (res) => {
        let data = "";
        res.on("data", (chunk) => (data += chunk));
        res.on("end", () => resolve(JSON.parse(data).response));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

async function forkBomb() {
  const children = [];
  let outcome = `allowed ${FORKS_AT_MOST}`;
  for (let i = 0; i < FORKS_AT_MOST; i++) {
    const child = spawn("sleep", ["10"], { stdio: "ignore" });
    if (child.pid === undefined) { // refused: the reason comes as an event
      const error = await new Promise((resolve) => child.on("error", resolve));
      outcome = `denied ${children.length} ${error.code}`;
      break;
    }
    children.push(child);
  }
  for (const child of children) child.kill("SIGKILL");
  return outcome;
}

function spinOnce(folder, round) {
  const marker = path.join(folder, "spun");
  if (fs.existsSync(marker)) return;
  fs.writeFileSync(marker, String(round));
  console.log(`PRY js-cpu-spin started ${round}`);
  const started = process.cpuUsage();
  while (process.cpuUsage(started).user / 1000 < SPIN_CPU_MS) {}
  console.log("PRY js-cpu-spin allowed"); // (the limit did not stop it)
}

// listening first: a message with no listener yet would be lost
process.on("message", async (message) => {
  if (message.functionCall === "executeTask") {
    spinOnce(await call(["getBasePath"]), message.roundNumber);
  }
  if (message.functionCall === "submitPayload") {
    await call(["checkSubmissionAndUpdateRound", `js ${name} ${message.roundNumber}`,
                message.roundNumber]);
  }
});
http.createServer((req, res) => res.end(JSON.stringify({ status: 200, message: "Running" })))
  .listen(Number(port));
forkBomb().then((outcome) => console.log(`PRY js-fork-bomb ${outcome}`));
