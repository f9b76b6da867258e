// The template's rule: net-negative votes lose 70% of their stake, zero votes get nothing,
// the rest share the bounty equally. The slash is the template's Math.floor(stake * 0.7),
// in floating point (90 ROE loses 62), as k2node's Python nodes compute it too: the nodes
// of a task must agree on every list to the unit.
export async function distribution(submitters, bounty, roundNumber) {
  const list = {};
  const approved = [];
  for (const submitter of submitters) {
    if (submitter.votes < 0) {
      list[submitter.publicKey] = -Math.floor(Number(submitter.stake) * 0.7);
    } else {
      list[submitter.publicKey] = 0; // a place kept in the submissions' order
      if (submitter.votes > 0) approved.push(submitter.publicKey);
    }
  }
  if (approved.length === 0) {
    console.log(`round ${roundNumber}: nobody to reward`);
    return list;
  }
  const reward = Math.floor(bounty / approved.length);
  for (const key of approved) list[key] = reward;
  return list;
}
