"""The HTTP routes, one module per route family (as vLLM's serving_chat / serving_completion / serving_embedding).

Each module's `install(app, state)` adds its routes; `serve/app.py` only assembles them. Request planning
shared by the generating routes lives in `serve/generation.py`.
"""
