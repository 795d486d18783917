"""The convert tests' shared fixtures: every fixture run and variant (``helm_run_dir``), converted
(``converted``); defined in ``helm_runs``."""

from tests.convert.helm_runs import converted, helm_run_dir, helm_variant_root

__all__ = ["converted", "helm_run_dir", "helm_variant_root"]
