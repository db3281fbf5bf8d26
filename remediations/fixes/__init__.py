"""The remediations: each a facts request and a pure plan (rate limit, nginx, both, rollback).
"""
