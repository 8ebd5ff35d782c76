"""Tests of tunesmith.jobs."""
