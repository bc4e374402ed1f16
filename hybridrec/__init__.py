"""hybridrec: hybrid content + collaborative recommendation with text features."""

from hybridrec.errors import ConfigError, DataError, HybridrecError, ModelFileError, NotFittedError, QueryError

__version__ = "0.2.0"

__all__ = [
    "ConfigError",
    "DataError",
    "HybridrecError",
    "HybridRecommender",
    "ModelFileError",
    "NotFittedError",
    "QueryError",
    "__version__",
]


def __getattr__(name: str):
    # The facade imports torch; keep `import hybridrec` light for the query path.
    if name == "HybridRecommender":
        from hybridrec.recommender import HybridRecommender

        return HybridRecommender
    raise AttributeError(name)
