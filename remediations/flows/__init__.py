"""Compositions above checks, run and fixes: verify --remediate and the gated rolling fix.
Nothing below imports them.
"""
