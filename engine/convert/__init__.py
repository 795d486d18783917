"""One HELM run -> its Arrow tables in the EEE record shapes
(pure: no I/O beyond the run's files).
"""
