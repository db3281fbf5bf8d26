"""The pure text editors (.env, nginx), the nginx planner, and what in a config is a secret.
Imports only model: no I/O here.
"""
