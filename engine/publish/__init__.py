"""Where finished shards go: a local dataset folder or a Hub repo, the committer thread, pacing,
the card.
"""
