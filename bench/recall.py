"""The old import path of the MQAR generator, kept for users: `bench.recall.recall_batch` lives in
bench/perplexity/recall.py, beside the suite it serves."""

from bench.perplexity.recall import chance_accuracy, check, recall_accuracy, recall_batch

__all__ = ["chance_accuracy", "check", "recall_accuracy", "recall_batch"]
