"""Invoke task definitions, one module per group of tasks; tasks.py only assembles them."""
