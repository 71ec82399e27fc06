"""``GET /api/accounts`` (Klaviyo: API overview: the account behind the key)."""

from __future__ import annotations

from ..calls import Backend, Call, Reply
from ..resources import account_resource


def get_accounts(backend: Backend, call: Call) -> Reply:
    return Reply(
        200,
        {
            "data": [account_resource(backend.public_key, call.base_url)],
            "links": {"self": call.url, "next": None, "prev": None},
        },
    )
