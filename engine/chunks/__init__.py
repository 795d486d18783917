"""The pool side: the worker function that converts a chunk of runs, spooling, and the shard
writer.
"""
