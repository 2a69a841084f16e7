"""Benchmarks: `swiftkit bench serve` load-tests an OpenAI endpoint (and an in-process baseline)."""
