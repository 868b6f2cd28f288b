"""digest: SCO and Putin–Xi stories from many feeds, folded into one digest per subscriber.

    from digest import Digest

    with Digest("feeds.yaml") as d:
        d.fetch()
        for story in d.stories():
            print(story["story"], story["title"])
        d.send_due()

`Digest` is the whole service; the records it returns and the errors it raises are here too.
"""

__version__ = "0.1.0"

from digest.config import Config, LoadedConfig, load_config
from digest.errors import ConfigError, DigestError, FeedError, StorageError
from digest.model.records import Entry, FeedReport, FeedState, FetchStatus, FetchSummary, StoredEntry
from digest.model.subscribers import Subscriber
from digest.service.api import Digest
from digest.service.fetching import FetchOptions
from digest.service.organising import OrganiseSummary
from digest.service.sending import SendReport
from digest.service.views import Explanation, RuleTrial, Status

__all__ = [
    "Config",
    "ConfigError",
    "Digest",
    "DigestError",
    "Entry",
    "Explanation",
    "FeedError",
    "FeedReport",
    "FeedState",
    "FetchOptions",
    "FetchStatus",
    "FetchSummary",
    "LoadedConfig",
    "OrganiseSummary",
    "RuleTrial",
    "SendReport",
    "Status",
    "StorageError",
    "StoredEntry",
    "Subscriber",
    "__version__",
    "load_config",
]
