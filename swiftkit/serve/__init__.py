"""`swiftkit serve`: an OpenAI-compatible HTTP server over swiftkit's continuous-batching engine."""
