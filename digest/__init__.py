"""digest: SCO and Putin–Xi stories from many feeds, folded into one digest per subscriber.

The public surface is small: load a config, open a store, run the pipeline.
"""

__version__ = "0.1.0"

from digest.config import Config, LoadedConfig, load_config
from digest.errors import ConfigError, DigestError, FeedError, StorageError
from digest.model.records import Entry, FeedState, FetchStatus, FetchSummary, StoredEntry
from digest.service.pipeline import FetchOptions, fetch_feeds, open_store
from digest.storage.store import Store

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
