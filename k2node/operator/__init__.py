"""The operator's commands: what the node holds and earns (`status`, `tasks`), and moving
its money (`stake`, `unstake`, `claim`), from a running node's API or straight from K2."""
