"""Tests of tunesmith.cli."""
