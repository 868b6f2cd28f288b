"""digest: SCO and Putin–Xi stories from many feeds, folded into one digest per subscriber.

The public surface is small: load a config, open a store, run the pipeline.
"""

from typing import TYPE_CHECKING, Any

from .config import Config, LoadedConfig, load_config
from .errors import ConfigError, DigestError, FeedError, StorageError
from .pipeline import FetchOptions, fetch_feeds, open_store
from .records import Entry, FeedState, FetchStatus, FetchSummary

if TYPE_CHECKING:
    from .store import Store, StoredEntry

__version__ = "0.1.0"
__all__ = [
    "Config",
    "ConfigError",
    "DigestError",
    "Entry",
    "FeedError",
    "FeedState",
    "FetchOptions",
    "FetchStatus",
    "FetchSummary",
    "LoadedConfig",
    "StorageError",
    "Store",
    "StoredEntry",
    "__version__",
    "fetch_feeds",
    "load_config",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # The store (and SQLAlchemy with it) is imported on first use: `digest fetch` forks its
    # workers before paying for it.
    if name in ("Store", "StoredEntry"):
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module 'digest' has no attribute {name!r}")
