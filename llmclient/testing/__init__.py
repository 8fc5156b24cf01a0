"""Test helpers: a loopback OpenAI-compatible HTTP server and reply builders for tests and benchmarks."""
