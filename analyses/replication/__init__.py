"""Replication over training seeds: the zoo report's headline findings rerun on each seed's replicas of the
zoo, each number given as per-seed values (with their bootstrap intervals), mean and spread over seeds, and
each finding's verdict (every seed, most seeds, one seed, no seed). See `analysis.run` and `section`."""

from analyses.replication.aggregate import Finding, Replicated, SeedValue, finding_sentence, verdict
from analyses.replication.analysis import ReplicationConfig, ReplicationResult, aggregate, member_name, run

__all__ = ["Finding", "Replicated", "ReplicationConfig", "ReplicationResult", "SeedValue", "aggregate",
           "finding_sentence", "member_name", "run", "verdict"]
