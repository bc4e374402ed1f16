"""One error family, so the CLI can turn every expected failure into one line and exit code 2."""

from __future__ import annotations


class HybridrecError(Exception):
    """Base of every error hybridrec raises on purpose (bad input, bad config, bad model file, bad query)."""


class DataError(HybridrecError):
    """A data file is missing, unreadable or malformed; the message names the file, line or column."""


class ConfigError(HybridrecError):
    """A config file or override is invalid; the message names the key."""


class ModelFileError(HybridrecError):
    """A model directory is missing, incomplete, corrupted or of an unsupported format version."""


class QueryError(HybridrecError):
    """A query names an unknown user or item, or asks for something impossible (k <= 0)."""


class TrainingError(HybridrecError):
    """A fit cannot give a usable model (the training loss diverged); the message names the epoch and the cure."""


class NotFittedError(HybridrecError):
    """A recommender was queried or saved before `fit` or `load`."""
