"""agh: the light client side — wire types, client and CLI. Never imports aghd.

``from agh import Client, AsyncClient`` imports each client only when it is
asked for (module ``__getattr__``, PEP 562): ``import agh``, which every
``agh`` command runs first, must not load msgspec, or anyio for the async
client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AsyncClient", "Client", "__version__"]

if TYPE_CHECKING:
    from agh.aclient import AsyncClient
    from agh.client import Client


def __getattr__(name: str) -> Any:
    if name == "Client":
        from agh.client import Client

        return Client
    if name == "AsyncClient":
        from agh.aclient import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'agh' has no attribute {name!r}")
