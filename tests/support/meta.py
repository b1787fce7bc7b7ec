"""Meta's webhook payload builders live in devtools.meta (the demo and `make send` post them too)."""

from devtools.meta import *  # noqa: F403
from devtools.meta import APP_SECRET, CUSTOMER, PHONE_NUMBER_ID, VERIFY_TOKEN  # noqa: F401
