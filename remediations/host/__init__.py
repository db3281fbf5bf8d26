"""Talking to a host: the SSH transport, the agent call, the journal's readers, and the programs that
run on the host (programs/). Imports only model.
"""
