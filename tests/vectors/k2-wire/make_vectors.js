// Makes k2-wire.json: the task program's instruction data and whole transactions as
// @solana/web3.js (v1) and @solana/buffer-layout encode them, with the layouts Koii's
// create-task-cli publishes. Run by hand once (`npm install @solana/web3.js@1
// @solana/buffer-layout@4`, then `node make_vectors.js > k2-wire.json`); the tests read
// the JSON and need no Node.js.
const web3 = require('@solana/web3.js');
const BufferLayout = require('@solana/buffer-layout');

const PROGRAM = new web3.PublicKey('Koiitask22222222222222222222222222222222222');
const CLOCK = web3.SYSVAR_CLOCK_PUBKEY;
const SYSTEM = web3.SystemProgram.programId;

const L = BufferLayout;
const LAYOUTS = {
  CreateTask: [0, [L.u8('instruction'), L.blob(24, 'task_name'), L.blob(64, 'task_description'),
    L.blob(64, 'task_audit_program'), L.blob(64, 'task_executable_network'),
    L.ns64('total_bounty_amount'), L.ns64('bounty_amount_per_round'), L.ns64('round_time'),
    L.ns64('audit_window'), L.ns64('submission_window'), L.ns64('minimum_stake_amount'),
    L.blob(64, 'task_metadata'), L.blob(64, 'local_vars'), L.ns64('allowed_failed_distributions')]],
  SubmitTask: [1, [L.u8('instruction'), L.blob(512, 'submission'), L.ns64('round')]],
  AuditSubmissions: [2, [L.u8('instruction'), L.ns64('is_valid'), L.ns64('round')]],
  AuditDistribution: [3, [L.u8('instruction'), L.ns64('is_valid'), L.ns64('round')]],
  Payout: [4, [L.u8('instruction'), L.ns64('round')]],
  SetActive: [6, [L.u8('instruction'), L.ns64('isActive')]],
  ClaimReward: [7, [L.u8('instruction')]],
  FundTask: [8, [L.u8('instruction'), L.ns64('amount')]],
  Stake: [9, [L.u8('instruction'), L.ns64('stakeAmount'), L.blob(64, 'ipAddress')]],
  Withdraw: [10, [L.u8('instruction')]],
  UploadDistributionList: [11, [L.u8('instruction'), L.blob(512, 'instruction_data'), L.ns64('round')]],
  SubmitDistributionList: [12, [L.u8('instruction'), L.ns64('round')]],
  UpdateTask: [14, [L.u8('instruction'), L.blob(24, 'task_name'), L.blob(64, 'task_description'),
    L.blob(64, 'task_audit_program'), L.blob(64, 'task_executable_network'),
    L.ns64('bounty_amount_per_round'), L.ns64('round_time'), L.ns64('audit_window'),
    L.ns64('submission_window'), L.ns64('minimum_stake_amount'), L.blob(64, 'task_metadata'),
    L.blob(64, 'local_vars'), L.ns64('allowed_failed_distributions')]],
};

function pad(text, length) {
  const bytes = Buffer.from(text, 'utf8');
  return Buffer.concat([bytes, Buffer.alloc(length - bytes.length, 32)]);
}

function encode(name, fields) {
  const [index, parts] = LAYOUTS[name];
  const layout = L.struct(parts);
  const data = Buffer.alloc(layout.span);
  layout.encode(Object.assign({ instruction: index }, fields), data);
  return data;
}

function key(seed) {
  return web3.Keypair.fromSeed(Buffer.alloc(32, seed));
}

const payer = key(1), staking = key(2), task = key(3), peer = key(4), funder = key(5);
const stakePot = key(6).publicKey;
const newTask = key(7), newStakePot = key(8).publicKey;
const blockhash = '4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM';  // 32 bytes, arbitrary

const chunk = Buffer.alloc(512);
chunk.writeUInt16LE(0, 0);
chunk.writeUInt16LE(508, 2);
Buffer.from('{"a":1}').copy(chunk, 4);

// name, fields, the task program's account list (role: [key, signer, writable]), signers
const CASES = [
  ['CreateTask', {
    task_name: pad('vector task', 24), task_description: pad('made by web3.js', 64),
    task_audit_program: pad('bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi', 64),
    task_executable_network: pad('IPFS', 64), total_bounty_amount: 100e9,
    bounty_amount_per_round: 3e9, round_time: 1500, audit_window: 600, submission_window: 600,
    minimum_stake_amount: 1.5e9, task_metadata: pad('', 64), local_vars: pad('', 64),
    allowed_failed_distributions: 1,
  }, [[payer.publicKey, true, true], [task.publicKey, true, true], [stakePot, false, true],
    [CLOCK, false, false]], [payer, task]],
  ['SubmitTask', { submission: pad('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku', 512), round: 7 },
    [[task.publicKey, false, true], [staking.publicKey, true, true], [CLOCK, false, false]],
    [payer, staking]],
  ['AuditSubmissions', { is_valid: 0, round: 7 },
    [[task.publicKey, false, true], [staking.publicKey, true, true], [peer.publicKey, false, false],
      [CLOCK, false, false]], [payer, staking]],
  ['AuditDistribution', { is_valid: 1, round: 6 },
    [[task.publicKey, false, true], [staking.publicKey, true, true], [peer.publicKey, false, true],
      [CLOCK, false, false]], [payer, staking]],
  ['Payout', { round: 5 },
    [[task.publicKey, false, true], [staking.publicKey, true, true], [stakePot, false, true],
      [CLOCK, false, false]], [payer, staking]],
  ['ClaimReward', {},
    [[task.publicKey, false, true], [staking.publicKey, true, true], [stakePot, false, true],
      [payer.publicKey, false, true]], [payer, staking]],
  ['FundTask', { amount: 25e9 },
    [[task.publicKey, false, true], [funder.publicKey, true, true], [stakePot, false, true],
      [SYSTEM, false, false], [CLOCK, false, false]], [payer, funder]],
  ['Stake', { stakeAmount: 2e9, ipAddress: pad('http://127.0.0.1:30017', 64) },
    [[task.publicKey, false, true], [staking.publicKey, true, true], [stakePot, false, true],
      [CLOCK, false, false]], [payer, staking]],
  ['Withdraw', {},
    [[task.publicKey, false, true], [staking.publicKey, true, true], [CLOCK, false, false]],
    [payer, staking]],
  ['UploadDistributionList', { instruction_data: chunk, round: 5 },
    [[task.publicKey, false, false], [staking.publicKey, true, true]], [payer, staking]],
  ['SubmitDistributionList', { round: 5 },
    [[task.publicKey, false, true], [staking.publicKey, true, true], [CLOCK, false, false]],
    [payer, staking]],
  ['SetActive', { isActive: 0 },
    [[task.publicKey, false, true], [payer.publicKey, true, false]], [payer]],
  ['UpdateTask', {
    task_name: pad('vector task', 24), task_description: pad('version two', 64),
    task_audit_program: pad('bafybeihkoviema7g3gxyt6la7vd5ho32ictqbilu3wnlo3rs7ewhnp7lly', 64),
    task_executable_network: pad('IPFS', 64), bounty_amount_per_round: 2e9, round_time: 1500,
    audit_window: 500, submission_window: 500, minimum_stake_amount: 1e9,
    task_metadata: pad('', 64), local_vars: pad('', 64), allowed_failed_distributions: 2,
  }, [[payer.publicKey, true, true], [task.publicKey, false, true], [stakePot, false, true],
    [CLOCK, false, false], [newTask.publicKey, true, true], [newStakePot, false, true]],
  [payer, newTask]],
];

const out = { program: PROGRAM.toBase58(), blockhash, keys: {}, cases: [] };
for (const [name, k] of Object.entries({ payer, staking, task, peer, funder, newTask })) {
  out.keys[name] = { seed: k.secretKey.slice(0, 1)[0], pubkey: k.publicKey.toBase58() };
}
out.keys.stakePot = { pubkey: stakePot.toBase58() };
out.keys.newStakePot = { pubkey: newStakePot.toBase58() };
for (const [name, fields, accounts, signers] of CASES) {
  const data = encode(name, fields);
  const tx = new web3.Transaction({ feePayer: payer.publicKey, recentBlockhash: blockhash });
  tx.add(new web3.TransactionInstruction({
    programId: PROGRAM, data,
    keys: accounts.map(([pubkey, isSigner, isWritable]) => ({ pubkey, isSigner, isWritable })),
  }));
  tx.sign(...signers);
  out.cases.push({
    name,
    data: data.toString('hex'),
    accounts: accounts.map(([k, s, w]) => [k.toBase58(), s, w]),
    signers: signers.map((s) => s.publicKey.toBase58()),
    transaction: tx.serialize().toString('base64'),
  });
}
// the System program's instructions as K2 clients send them beside the task program's
const system = [
  ['createAccount', web3.SystemProgram.createAccount({ fromPubkey: payer.publicKey,
    newAccountPubkey: staking.publicKey, lamports: 2e9 + 7_850_880 + 10000, space: 100,
    programId: PROGRAM }), [payer, staking]],
  ['transfer', web3.SystemProgram.transfer({ fromPubkey: payer.publicKey,
    toPubkey: peer.publicKey, lamports: 1_000_000 }), [payer]],
];
out.system = system.map(([name, ix, signers]) => {
  const tx = new web3.Transaction({ feePayer: payer.publicKey, recentBlockhash: blockhash }).add(ix);
  tx.sign(...signers);
  return { name, data: ix.data.toString('hex'), transaction: tx.serialize().toString('base64') };
});
console.log(JSON.stringify(out, null, 1));
