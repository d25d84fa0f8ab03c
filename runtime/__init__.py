"""podium's container runtime, as a library (the agent) and a command (``podium-runtime``).

Public names are loaded on first use, so ``podium-runtime`` starts without importing
what a command does not need.
"""
