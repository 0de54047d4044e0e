"""Pipeline stages: each sets one fact on the RequestContext (see pipeline.py)."""
