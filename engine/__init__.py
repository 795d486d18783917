"""helmproc.engine: the pipeline that turns HELM runs into Parquet shards.

Stages (each a small module): sources discover runs, the planner cuts them into
deterministic chunks, workers convert chunks into shard files, publishers push shards to a
destination. The coordinator (``coordinator``) is the only writer of the journal.
"""
