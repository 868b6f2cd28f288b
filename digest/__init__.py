"""digest: SCO and Putin–Xi stories from many feeds, folded into one digest per subscriber.

The public surface is small: load a config, open a store, run the pipeline.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config, LoadedConfig, load_config
    from .errors import ConfigError, DigestError, FeedError, StorageError
    from .pipeline import FetchOptions, fetch_feeds, open_store
    from .records import Entry, FeedState, FetchStatus, FetchSummary
    from .store import Store, StoredEntry

__version__ = "0.1.0"

# Each name is imported from its module on first use: `digest fetch` forks its workers before
# the config's (pydantic) and the store's (SQLAlchemy) imports are paid for (launch.py).
_HOMES = {
    "Config": "config",
    "LoadedConfig": "config",
    "load_config": "config",
    "ConfigError": "errors",
    "DigestError": "errors",
    "FeedError": "errors",
    "StorageError": "errors",
    "FetchOptions": "pipeline",
    "fetch_feeds": "pipeline",
    "open_store": "pipeline",
    "Entry": "records",
    "FeedState": "records",
    "FetchStatus": "records",
    "FetchSummary": "records",
    "Store": "store",
    "StoredEntry": "store",
}
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
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'digest' has no attribute {name!r}")
    return getattr(import_module(f".{home}", __name__), name)
