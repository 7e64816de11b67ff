"""Judging encoders: bin/evaluate's probes (job.py) and bin/correlate (correlate.py).

Depends on the shared rooms (runs, example_cache, windows, metrics) and on
serving/ (loading a run or an export, embedding in windows); never on train/.
"""
