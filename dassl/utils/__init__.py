"""Helpers re-exported under Dassl's ``dassl.utils`` names."""
from .errors import *  # noqa: F401,F403
from .lock import *  # noqa: F401,F403
from .logger import *  # noqa: F401,F403
from .meters import *  # noqa: F401,F403
from .registry import *  # noqa: F401,F403
from .tools import *  # noqa: F401,F403
from .torchtools import *  # noqa: F401,F403
