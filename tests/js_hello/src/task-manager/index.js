// A small stand-in for @_koii/task-manager: the nine template functions around a task's own
// parts (setup, task, submission, audit, distribution, routes), driven by the node's phase
// messages on the fork IPC channel. Its audits, distribution-submitter selection and
// distribution audits follow namespace-wrapper 1.0.23's flows.
import { namespaceWrapper } from "./namespace-wrapper.js";
import {
  auditSample,
  distributionMatches,
  safetyCheck,
  selectDistributionSubmitter,
  submittersOf,
} from "./rules.js";

class TaskManager {
  constructor(parts) {
    this.parts = parts;
  }

  // -- the three a task writes -----------------------------------------------------------
  async task(round) {
    await this.parts.task(round);
  }

  async fetchSubmission(round) {
    return this.parts.submission(round);
  }

  async validateNode(submissionValue, round, submitterKey) {
    return this.parts.audit(submissionValue, round, submitterKey);
  }

  // -- the template's six ----------------------------------------------------------------
  async submitTask(round) {
    await namespaceWrapper.getSlot();
    const value = await this.fetchSubmission(round);
    if (typeof value !== "string") {
      console.log(`round ${round}: no submission (not a string)`);
      return;
    }
    await namespaceWrapper.checkSubmissionAndUpdateRound(value, round);
  }

  async auditTask(round) {
    await namespaceWrapper.getSlot();
    const info = await namespaceWrapper.getTaskSubmissionInfo(round);
    const submissions = info?.submissions?.[round];
    if (!submissions) return;
    const triggers = info.submissions_audit_trigger?.[round] ?? {};
    const me = await namespaceWrapper.getSubmitterAccount();
    const mine = me.publicKey.toBase58();
    for (const candidate of auditSample(Object.keys(submissions))) {
      if (candidate === mine) continue; // nobody votes on their own submission
      let answer;
      try {
        answer = await this.validateNode(submissions[candidate].submission_value, round, candidate);
      } catch (err) {
        // our own failure is no evidence against the peer
        console.error(`round ${round}: validating ${candidate} failed:`, err);
      }
      const isValid = answer !== false; // a missing answer counts as valid
      console.log(`round ${round}: ${candidate} is ${isValid ? "valid" : "invalid"}`);
      if (!isValid || candidate in triggers) {
        await namespaceWrapper.auditSubmission(candidate, isValid, me, round);
      }
    }
  }

  async generateDistributionList(round) {
    const info = await namespaceWrapper.getTaskSubmissionInfo(round);
    const state = await namespaceWrapper.getTaskState({ is_stake_list_required: true });
    const submissions = info?.submissions?.[round] ?? {};
    const triggers = info?.submissions_audit_trigger?.[round] ?? {};
    const submitters = submittersOf(submissions, triggers, state.stake_list);
    const bounty = state.bounty_amount_per_round;
    const list = await this.parts.distribution(submitters, bounty, round);
    return safetyCheck(list, submissions, bounty);
  }

  async submitDistributionList(round) {
    const list = await this.generateDistributionList(round);
    await namespaceWrapper.uploadDistributionList(list, round);
    await namespaceWrapper.distributionListSubmissionOnChain(round);
  }

  async selectAndSubmitDistributionList(round, isPreviousRoundFailed) {
    const submissions = {};
    for (const r of [round, round - 1, round - 2].filter((r) => r >= 0)) {
      const info = await namespaceWrapper.getTaskSubmissionInfo(r);
      submissions[r] = info?.submissions?.[r] ?? {};
    }
    const dist = await namespaceWrapper.getTaskDistributionInfo(round);
    const selected = selectDistributionSubmitter(
      submissions,
      dist?.distribution_rewards_submission,
      dist?.distributions_audit_record,
      round,
      isPreviousRoundFailed,
    );
    const me = await namespaceWrapper.getSubmitterAccount();
    console.log(`round ${round}: distribution submitter ${selected || "nobody"}`);
    if (!selected || selected !== me.publicKey.toBase58()) return;
    await this.submitDistributionList(round);
    // as the wrapper does: the payout once the distribution audit window has passed
    const state = await namespaceWrapper.getTaskState({});
    const slotMs = await namespaceWrapper.getAverageSlotTime();
    const wait = (state.audit_window + state.submission_window) * slotMs;
    setTimeout(() => guarded("payout", round, () => namespaceWrapper.payoutTrigger(round)), wait);
  }

  // The submitter's uploaded list against this node's own, regenerated.
  async validateDistribution(_submissionValue, round, submitterKey) {
    const uploaded = await namespaceWrapper.getDistributionList(submitterKey, round);
    const parsed = typeof uploaded === "string" ? JSON.parse(uploaded) : uploaded;
    return distributionMatches(await this.generateDistributionList(round), parsed);
  }

  async auditDistribution(round) {
    const info = await namespaceWrapper.getTaskDistributionInfo(round);
    const lists = info?.distribution_rewards_submission?.[round];
    if (!lists) return;
    const triggers = info.distributions_audit_trigger?.[round] ?? {};
    const me = await namespaceWrapper.getSubmitterAccount();
    for (const [candidate, entry] of Object.entries(lists)) {
      if (candidate === me.publicKey.toBase58()) continue;
      const isValid = await this.validateDistribution(entry.submission_value, round, candidate);
      console.log(`round ${round}: list of ${candidate} is ${isValid ? "valid" : "invalid"}`);
      if (!isValid || candidate in triggers) {
        await namespaceWrapper.distributionListAuditSubmission(candidate, isValid, me, round);
      }
    }
  }

  phase(message) {
    const round = message.roundNumber;
    switch (message.functionCall) {
      case "executeTask":
        return this.task(round);
      case "submitPayload":
        return this.submitTask(round);
      case "auditPayload":
        return this.auditTask(round);
      case "generateAndSubmitDistributionList":
        return this.selectAndSubmitDistributionList(round, Boolean(message.isPreviousRoundFailed));
      case "distributionListAudit":
        return this.auditDistribution(round);
      default:
        return undefined; // not a phase: ignored, as the contract says
    }
  }
}

// A phase's failure is logged; it must not end the task process.
async function guarded(name, round, run) {
  try {
    await run();
  } catch (err) {
    console.error(`${name} of round ${round} failed:`, err);
  }
}

export function initializeTaskManager(parts) {
  const manager = new TaskManager(parts);
  // the start-up calls the template makes before it takes phases
  const ready = (async () => {
    await namespaceWrapper.initializeDB();
    await namespaceWrapper.getRpcUrl();
    await namespaceWrapper.defaultTaskSetup();
    await parts.setup();
    await parts.routes();
  })();
  // listening at once: a phase sent during start-up waits for it rather than being lost
  process.on("message", (message) => {
    if (message === null || typeof message !== "object" || !message.functionCall) return;
    guarded(message.functionCall, message.roundNumber, async () => {
      await ready;
      await manager.phase(message);
    });
  });
  ready.catch((err) => {
    console.error("task start-up failed:", err);
    process.exit(1);
  });
}
