"""Where HELM runs come from: a local ``benchmark_output/`` folder, or the public bucket
over HTTP.
"""
