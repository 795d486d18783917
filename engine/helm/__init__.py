"""Reading HELM's run files: typed JSON views, streaming big arrays, the run index, decryption,
stat values.
"""
