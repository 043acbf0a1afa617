"""Prompt intake (deduplication, personal-information filter, per-user cap, split by user id).

Web-free: imports only the standard library and pydantic, so the demo pipeline and the labeling app share it.
"""
