"""Read-only looks at hosts: verify and its controls, the health gate, diagnose, probe, monitor,
the WebSocket client, the compliance history and its webhook. Never imports a fix.
"""
