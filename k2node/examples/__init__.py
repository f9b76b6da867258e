"""Example tasks bundled with k2node."""
