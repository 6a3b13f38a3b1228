"""Unit tests of core/: fast, oracle-based, CPU seconds."""
