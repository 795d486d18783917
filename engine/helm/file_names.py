"""HELM's file and folder names: the one place each is spelled.

A ``benchmark_output/`` written by ``helm-run`` / ``helm-summarize`` holds
``runs/<suite>/<run>/`` folders of the five run files (plus ``encryption_data.json`` for
encrypted runs) and ``releases/<release>/`` indexes. Names only: nothing here reads or writes,
so nothing here survives a crash or needs to.
"""

from __future__ import annotations

# The five helm-run files of one run, all required, smallest first (sources fetch in this order
# so a missing one fails the run before the large ones are fetched).
RUN_SPEC_FILE = "run_spec.json"
SCENARIO_FILE = "scenario.json"
STATS_FILE = "stats.json"
PER_INSTANCE_STATS_FILE = "per_instance_stats.json"
SCENARIO_STATE_FILE = "scenario_state.json"
REQUIRED_RUN_FILES = (
    RUN_SPEC_FILE,
    SCENARIO_FILE,
    STATS_FILE,
    PER_INSTANCE_STATS_FILE,
    SCENARIO_STATE_FILE,
)
# The keys of an encrypted run's ``[encrypted_text_N]`` placeholders (GPQA, EWoK).
ENCRYPTION_DATA_FILE = "encryption_data.json"
# Every file converting a run may read.
RUN_INPUT_FILES = (*REQUIRED_RUN_FILES, ENCRYPTION_DATA_FILE)

# A release's indexes, under ``releases/<release>/``: each run's suite, and every run's spec.
RUNS_INDEX = "runs_to_run_suites.json"
RUN_SPECS_INDEX = "run_specs.json"
# Folder names HELM writes next to run folders that are not runs.
NON_RUN_DIRS = frozenset({"eval_cache", "groups"})
