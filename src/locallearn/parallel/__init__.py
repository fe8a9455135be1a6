"""Blocks on workers: a rule's stages spread over processes, pipelined (docs/parallel.md)."""

from locallearn.parallel.placement import balance, check_rule, parse_placement, worker_support
from locallearn.parallel.simulate import simulate

__all__ = ["balance", "check_rule", "parse_placement", "simulate", "worker_support"]
