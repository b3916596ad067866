"""Persistence: SQLite (metadata, queue) and files under data_dir (bytes)."""
