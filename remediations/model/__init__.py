"""The data every layer shares: the inventory and desired-state defaults, results, errors, masking,
and the readers of the facts the agent returns. Imports nothing of wsguard above it.
"""
