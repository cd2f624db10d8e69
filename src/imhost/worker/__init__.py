"""Scheduled and background jobs."""
