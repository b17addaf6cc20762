"""The old import path of the MQAR generator, kept for users: `bench.recall.recall_batch` lives in
bench/perplexity/recall.py, beside the suite it serves, with what key-blind answers score there."""

from bench.perplexity.recall import (
    ceiling_accuracy,
    chance_accuracy,
    check,
    floor_accuracy,
    key_collision_rate,
    recall_accuracy,
    recall_batch,
)

__all__ = [
    "ceiling_accuracy",
    "chance_accuracy",
    "check",
    "floor_accuracy",
    "key_collision_rate",
    "recall_accuracy",
    "recall_batch",
]
