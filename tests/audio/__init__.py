"""Tests of tunesmith.audio."""
