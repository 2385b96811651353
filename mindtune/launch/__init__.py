"""Launching jobs on Ascend clusters: the msrun worker wrapper and post-mortem, the ModelArts environment,
and rank tables. Plain Python (no MindSpore import), so the scripts can use it before a job starts."""
