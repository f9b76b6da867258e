"""The K2 world k2node honours (K2-CONTRACT): units, rounds, votes, the distribution rule,
the task state's sections, the phase messages, the task process's argv and IPC framing, and
the namespace RPC's wire names.

Both sides import it (the node and the local K2 on one side, the task SDK on the other); it
imports nothing of k2node's besides itself, so it sits at the bottom of every import chain.
"""
