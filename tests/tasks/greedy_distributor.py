"""An honest worker that, when selected, first submits a distribution list paying itself the
whole bounty; on the retry after a failed payout it submits the template's list."""

from __future__ import annotations

from k2node.examples.hello_task import HelloTask


class GreedyDistributor(HelloTask):
    async def submit_distribution_list(
        self, round_: int, is_previous_round_failed: bool = False
    ) -> bool:
        if is_previous_round_failed:
            return await super().submit_distribution_list(round_, True)
        if not await self.selected_for_distribution(round_):
            return False
        ns = self.namespace
        info = await ns.get_task_submission_info(round_)
        submissions = info["submissions"].get(str(round_), {})
        me = await ns.get_submitter_pubkey()
        state = await ns.get_task_state({})
        greedy = dict.fromkeys(submissions, 0) | {me: int(state["bounty_amount_per_round"])}
        await ns.upload_distribution_list(greedy, round_)
        await ns.distribution_list_submission_on_chain(round_)
        return True
