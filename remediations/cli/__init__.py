"""Invoke task definitions, one module per group of tasks; program.py assembles them (the `wsguard` command)
and tasks.py adds the lab's.

Each task module imports the layers it calls inside its tasks: `invoke --list` and `wsguard --help` load
every task module, and importing paramiko, fabric, rich and testinfra up front took them from about 0.13 s
to 0.5-1.4 s (python -X importtime, measured on the renovation). Everywhere else imports are at the top.
"""
