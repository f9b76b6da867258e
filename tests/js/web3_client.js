// An unmodified @solana/web3.js (v1) client against a K2 JSON-RPC URL: reads the slot,
// airdrops, transfers, and reads a task account as the namespace wrapper does. Prints one
// JSON object with what it saw. Usage: node web3_client.js URL TASK_ID
const web3 = require('@solana/web3.js');

async function landed(connection, signature) {
  for (let i = 0; i < 100; i++) {
    const { value } = await connection.getSignatureStatuses([signature]);
    if (value[0] && value[0].confirmationStatus === 'finalized') return value[0];
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${signature} did not land`);
}

async function main() {
  const [url, taskId] = process.argv.slice(2);
  const connection = new web3.Connection(url, 'confirmed');
  const out = { slot: await connection.getSlot() };
  const payer = web3.Keypair.generate();
  const to = web3.Keypair.generate().publicKey;
  await landed(connection, await connection.requestAirdrop(payer.publicKey, 2e9));
  out.airdropped = await connection.getBalance(payer.publicKey);
  const { blockhash } = await connection.getLatestBlockhash();
  const tx = new web3.Transaction({ feePayer: payer.publicKey, recentBlockhash: blockhash }).add(
    web3.SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: to, lamports: 12345 }),
  );
  out.transfer = (await landed(connection, await connection.sendTransaction(tx, [payer]))).err;
  out.received = await connection.getBalance(to);
  out.payerAfter = await connection.getBalance(payer.publicKey);
  out.fee = (await connection.getFeeForMessage(tx.compileMessage())).value;
  // what the namespace wrapper does with Koii's getTaskAccountInfo: JSON.parse of the data
  const raw = await connection._rpcRequest('getTaskAccountInfo', [
    taskId, { encoding: 'base64', submission: false, distribution: false, balance: false, stake: true },
  ]);
  const state = JSON.parse(Buffer.from(raw.result.value.data[0], 'base64').toString('utf-8'));
  out.taskName = state.task_name;
  out.stakers = Object.keys(state.stake_list).length;
  const program = new web3.PublicKey('Koiitask22222222222222222222222222222222222');
  const listed = await connection.getProgramAccounts(program, {
    filters: [{ memcmp: { offset: 0, bytes: 'aRN1MbEZhbr2W97MTP3RhQjjqHgoZN' } }],
  });
  out.listed = listed.map((a) => a.pubkey.toBase58());
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e.message || e);
  process.exit(1);
});
