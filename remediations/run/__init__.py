"""Running a plan on hosts: the transaction on one host, the runner's pool, the rolling fleet.
"""
