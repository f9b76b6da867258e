// A JavaScript task that calls every method the newest namespace wrapper (1.0.23) sends to
// its node, with the arguments in the shapes the wrapper sends them, and serves what it got
// back at GET /calls (reached through the node's /task/<id>/calls).
const http = require("http");

const [, , name, taskId, port, mode, mainKey, secret, k2Url, serviceUrl, stake, nodePort] =
  process.argv;

function call(args) {
  return new Promise((resolve) => {
    const body = JSON.stringify({ args, taskId, secret });
    const req = http.request(
      { host: "127.0.0.1", port: Number(nodePort), path: "/namespace-wrapper", method: "POST",
        headers: { "Content-Type": "application/json" } },
      (res) => {
        let data = "";
        res.on("data", (chunk) => (data += chunk));
        res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(data) }));
      },
    );
    req.on("error", (e) => resolve({ status: 0, body: { message: String(e) } }));
    req.end(body);
  });
}

const calls = {};

async function main() {
  const ask = async (...args) => {
    calls[args[0]] = await call(args);
    return calls[args[0]].body.response;
  };
  await ask("getTaskLevelDBPath");
  await ask("getRpcUrl");
  await ask("defaultTaskSetup");
  await ask("getBasePath");
  await ask("getRound");
  await ask("getCurrentSlot");
  await ask("getAverageSlotTime");
  await ask("getTaskNodeVersion");
  const flags = { is_submission_required: true, is_distribution_required: true,
                  is_available_balances_required: true, is_stake_list_required: true };
  const state = await ask("getTaskState", flags);
  await ask("getTaskStateById", taskId, { is_stake_list_required: true }, "KOII");
  await ask("getTaskSubmissionInfo", 0);
  await ask("getTaskDistributionInfo", 0);
  const account = await ask("getSubmitterAccount", "KOII");
  const signed = await ask("signData", { hello: "world" });
  const me = Object.keys(state.stake_list)[0];
  await ask("verifySignedData", signed, me);
  await ask("getNodes", serviceUrl);
  await ask("getProgramAccounts");
  await ask("logger", "log", "hello from the wrapper test", "test");
  await ask("fs", "writeFile", "a.txt", "x");
  await ask("fsStaking", "readFile", "a.txt");
  await ask("fsWriteStream", "b.txt");
  await ask("fsReadStream", "a.txt");
  await ask("getDistributionList", me, 0);
  const pot = state.stake_pot_account;
  await ask("stakeOnChain", taskId, account, pot, Number(stake));
  await ask("claimReward", pot, mainKey, account);
  await ask("sendTransaction", mainKey, me, 1);  // refused: transfers are the operator's
  await ask("sendAndConfirmTransactionWrapper", { type: "Buffer", data: [1, 2, 3] }, []);
  // the round actions, asked before their windows: refused by K2, but served
  await ask("checkSubmissionAndUpdateRound", "early", 0);
  await ask("auditSubmission", me, false, 0);
  await ask("distributionListAuditSubmission", me, true, 0);
  await ask("uploadDistributionList", { [me]: 0 }, 0);
  await ask("distributionListSubmissionOnChain", 0);
  await ask("payloadTrigger", 0);
}

const done = main();
process.on("message", () => {});
http.createServer(async (req, res) => {
  if (req.url === "/calls") {
    await done;
    res.end(JSON.stringify(calls));
    return;
  }
  res.end(JSON.stringify({ status: 200, message: "Running" }));
}).listen(Number(port));
