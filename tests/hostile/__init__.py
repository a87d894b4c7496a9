"""Regression tests for hostile senders, owners and broken parts, each against the real stack."""
