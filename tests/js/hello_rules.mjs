// Runs the JavaScript hello task's distribution rules on cases read from stdin (JSON) and
// prints their answers, for tests/test_js_template.py to hold against the Python node's.
import { readFileSync } from "node:fs";
import {
  distributionMatches,
  safetyCheck,
  selectDistributionSubmitter,
  submittersOf,
} from "../js_hello/src/task-manager/rules.js";
import { distribution } from "../js_hello/src/task/4-distribution.js";

console.log = (...args) => console.error(...args); // stdout carries the answers alone
const cases = JSON.parse(readFileSync(0, "utf8"));
const out = { selected: [], lists: [], matches: [] };
for (const c of cases.selection) {
  const s = c.state;
  out.selected.push(
    selectDistributionSubmitter(
      s.submissions,
      s.distribution_rewards_submission,
      s.distributions_audit_record,
      c.round,
      c.failed,
    ),
  );
}
for (const c of cases.lists) {
  const submitters = submittersOf(c.submissions, c.triggers, c.stake_list);
  const list = await distribution(submitters, c.bounty, 0);
  out.lists.push(JSON.stringify(safetyCheck(list, c.submissions, c.bounty)));
}
for (const c of cases.matches) out.matches.push(distributionMatches(c.expected, c.uploaded));
process.stdout.write(JSON.stringify(out));
