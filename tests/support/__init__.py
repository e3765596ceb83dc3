"""Helpers the test modules share (fixtures stay in tests/conftest.py); a test module
imports these, never another test module."""
