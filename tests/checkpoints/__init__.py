"""Tests of tunesmith.checkpoints."""
