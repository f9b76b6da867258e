"""CoreLogic: the nine template functions. A task subclasses it and writes three of them."""

from __future__ import annotations

import random
from typing import Any

from aiohttp import web

from k2node.contract.distribution import (
    default_distribution,
    distribution_matches,
    safety_check,
    select_distribution_submitter,
)
from k2node.contract.task_state import in_round
from k2node.contract.votes import audit_sample
from k2node.logs import get_logger
from k2node.task.eager import eager_gather
from k2node.task.namespace import NamespaceWrapper

log = get_logger("k2node.task")


class CoreLogic:
    """Subclass it; write `task`, `fetch_submission` and `validate_node`.

    The other six follow the K2 template exactly and are there to override when a task
    needs its own rules. `namespace` is set by the task runtime before `setup` runs.
    """

    namespace: NamespaceWrapper
    # The largest request body the node lets through to `routes()`, in bytes; None: the
    # node's own limit (K2NODE_TASK_MAX_BODY_MB), which also caps this one.
    max_request_body: int | None = None
    # Draws each audit's sample; None: the system's randomness (a simulation seeds one).
    audit_rng: random.Random | None = None

    async def setup(self) -> None:
        """Runs once after the task's database is open, before the first phase."""

    def routes(self) -> list[web.RouteDef]:
        """The task's own HTTP routes, served at /task/<taskId>/... through the node, bodies
        streamed both ways; a `web.WebSocketResponse` handler is a WebSocket endpoint."""
        return []

    # -- the three a task writes ---------------------------------------------------------------
    async def task(self, round_: int) -> None:
        raise NotImplementedError("a task must implement task(round)")

    async def fetch_submission(self, round_: int) -> str | None:
        raise NotImplementedError("a task must implement fetch_submission(round)")

    async def validate_node(self, submission_value: str, round_: int, submitter_key: str) -> bool:
        raise NotImplementedError("a task must implement validate_node(value, round, key)")

    # -- template defaults ---------------------------------------------------------------------
    async def submit_task(self, round_: int) -> Any:
        value = await self.fetch_submission(round_)
        if not isinstance(value, str):
            log.warning("submission_skipped", round=round_, reason="not a string")
            return None
        return await self.namespace.check_submission_and_update_round(value, round_)

    async def audit_task(self, round_: int) -> None:
        ns = self.namespace
        info = await ns.get_task_submission_info(round_)
        submissions = in_round(info, "submissions", round_)
        triggers = in_round(info, "submissions_audit_trigger", round_)

        async def validate(key: str) -> bool:
            value = submissions[key].get("submission_value")
            try:
                verdict = await self.validate_node(value, round_, key)
            except Exception as exc:  # our own failure is no evidence against the peer
                log.warning("validation_error", round=round_, candidate=key, error=repr(exc))
                verdict = True
            return verdict is not False  # a missing answer counts as valid

        # all at once: a slow peer delays the audit by its own time, not everyone's
        sample = audit_sample(submissions, await ns.get_submitter_pubkey(), self.audit_rng)
        verdicts = await eager_gather(*(validate(key) for key in sample))
        for key, is_valid in zip(sample, verdicts, strict=True):
            log.info("node_validated", round=round_, candidate=key, is_valid=is_valid)
            if not is_valid or key in triggers:
                await ns.audit_submission(key, is_valid, round_)

    async def generate_distribution_list(
        self, round_: int, is_previous_round_failed: bool = False
    ) -> dict[str, int]:
        ns = self.namespace
        info = await ns.get_task_submission_info(round_)
        state = await ns.get_task_state({"is_stake_list_required": True})
        return default_distribution(
            in_round(info, "submissions", round_),
            in_round(info, "submissions_audit_trigger", round_),
            state.get("stake_list", {}),
            int(state["bounty_amount_per_round"]),
        )

    async def _checked_distribution(
        self, round_: int, is_previous_round_failed: bool = False
    ) -> dict[str, int]:
        ns = self.namespace
        distribution = await self.generate_distribution_list(round_, is_previous_round_failed)
        info = await ns.get_task_submission_info(round_)
        state = await ns.get_task_state({})
        return safety_check(
            distribution,
            in_round(info, "submissions", round_),
            int(state["bounty_amount_per_round"]),
        )

    async def selected_for_distribution(
        self, round_: int, is_previous_round_failed: bool = False
    ) -> bool:
        """Whether this node is the one every node selects to submit the round's list."""
        ns = self.namespace
        submissions: dict[str, Any] = {}
        for r in (round_, round_ - 1, round_ - 2):
            if r >= 0:
                info = await ns.get_task_submission_info(r)
                submissions[str(r)] = in_round(info, "submissions", r)
        dist_info = await ns.get_task_distribution_info(round_)
        selected = select_distribution_submitter(
            submissions,
            dist_info.get("distribution_rewards_submission", {}),
            dist_info.get("distributions_audit_record", {}),
            round_,
            is_previous_round_failed,
        )
        me = await ns.get_submitter_pubkey()
        log.info("distribution_selection", round=round_, selected=selected, me=selected == me)
        return selected == me

    async def submit_distribution_list(
        self, round_: int, is_previous_round_failed: bool = False
    ) -> bool:
        """Upload and submit the list when this node is the selected one; True if it did."""
        if not await self.selected_for_distribution(round_, is_previous_round_failed):
            return False
        ns = self.namespace
        distribution = await self.distribution_to_submit(round_, is_previous_round_failed)
        await ns.upload_distribution_list(distribution, round_)
        await ns.distribution_list_submission_on_chain(round_)
        return True

    async def distribution_to_submit(
        self, round_: int, is_previous_round_failed: bool = False
    ) -> dict[str, int]:
        """The list this node uploads when it is the selected one: the generated list, after
        the template's safety check."""
        return await self._checked_distribution(round_, is_previous_round_failed)

    async def validate_distribution(
        self, submitter: str, round_: int, distribution: dict[str, Any] | None
    ) -> bool:
        expected = await self._checked_distribution(round_)
        return distribution_matches(expected, distribution)

    async def audit_distribution(self, round_: int) -> None:
        ns = self.namespace
        info = await ns.get_task_distribution_info(round_)
        triggers = in_round(info, "distributions_audit_trigger", round_)
        me = await ns.get_submitter_pubkey()
        for candidate in in_round(info, "distribution_rewards_submission", round_):
            if candidate == me:
                continue
            uploaded = await ns.get_distribution_list(candidate, round_)
            is_valid = await self.validate_distribution(candidate, round_, uploaded)
            log.info("distribution_validated", round=round_, candidate=candidate, is_valid=is_valid)
            if not is_valid or candidate in triggers:
                await ns.distribution_list_audit_submission(candidate, is_valid, round_)
