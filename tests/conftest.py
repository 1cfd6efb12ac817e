"""Shared pytest configuration: the repository root is the rootdir, so `models`, `service`, ... import."""
