"""Tests of learnkit/_storage."""
