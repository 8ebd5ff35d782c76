"""Tests of tunesmith.engine."""
