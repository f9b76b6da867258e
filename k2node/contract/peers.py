"""Who a task's peers are (K2-CONTRACT: peers reach each other as
`<ip_address_list[pubkey]>/task/<taskId>/<path>`): the task's other staking keys with an
http(s) base URL, in a stable order. The node's getPeers (what JavaScript tasks ask) and the
task SDK's `namespace.peers()` both list them by this rule."""

from __future__ import annotations

from typing import Any

from yarl import URL


def peer_urls(ip_address_list: Any, own_key: str) -> list[tuple[str, str]]:
    """(staking key, base URL) of each other node of the task whose URL can be reached."""
    if not isinstance(ip_address_list, dict):
        return []
    found = []
    for key, url in sorted(ip_address_list.items()):
        if key == own_key or not isinstance(key, str) or not isinstance(url, str):
            continue
        parsed = URL(url) if url.startswith(("http://", "https://")) else None
        if parsed is not None and parsed.host:
            found.append((key, url))
    return found
