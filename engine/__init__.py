"""helmproc.engine: the pipeline that turns HELM runs into Parquet shards.

Stages, one package each, in the order data flows (each imports only the ones below it and the
shared vocabulary; ``pyproject.toml``'s import contracts enforce it):

    job/        one job: start or continue it, plan, the coordinator (the only writer of the
                journal) and its repairs and overruns, executors, budget, interrupts, progress
    publish/    where shards go: a folder, a Hub repo; the committer and its pacer; the card
    export/     a finished dataset into EEE's datastore layout
    chunks/     the worker: one chunk of runs into shard files (spool, shard writer, pid files)
    convert/    one HELM run into Arrow tables of EEE records
    sources/    where runs come from: a folder, the bucket (HTTP), filters, prefetch
    helm/       reading HELM's files: typed JSON views, streamed arrays, decryption, stat values

and the shared vocabulary that everything may import and that imports nothing else from
helmproc: ``errors``, ``facts``, ``safe_paths``, ``durable``, ``dataset_layout``, ``retry``,
``input_files``, ``url_secrets``. The journal (``helmproc.journal``) sits beside the stages:
only ``job/`` uses it, and it imports only the shared vocabulary.
"""
