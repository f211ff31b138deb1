"""Tests of learnkit/_insights."""
