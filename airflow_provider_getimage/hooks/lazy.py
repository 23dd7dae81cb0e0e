"""
The async hook class, imported off the event loop: what both triggers call before their first poll.

Kept apart from the hooks themselves (requests, aiohttp, the HTTP provider: about 0.15 s to
import) so that a trigger module loads none of them, and from the triggers so that neither trigger
module imports the other.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from airflow_provider_getimage.hooks.getimage import GetImageAsyncHook

__all__ = ["async_hook_class"]

_HOOKS_MODULE = "airflow_provider_getimage.hooks.getimage"
_HOOK_IMPORTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, asyncio.Future[type[GetImageAsyncHook]]
] = weakref.WeakKeyDictionary()


async def async_hook_class() -> type[GetImageAsyncHook]:
    """
    ``GetImageAsyncHook``, its module (requests, aiohttp, the HTTP provider: about 0.15 s) imported
    in a thread, once for every trigger of the loop.

    The triggerer imports this module and starts ``run`` on its event loop; a heavy import there
    would stall every other trigger. A thousand triggers started at once share one import: the
    others wait for it without blocking the loop (a plain import of a module another thread is
    still executing would block on Python's import lock).
    """
    loaded = getattr(sys.modules.get(_HOOKS_MODULE), "GetImageAsyncHook", None)
    if loaded is not None:
        return cast("type[GetImageAsyncHook]", loaded)
    loop = asyncio.get_running_loop()
    pending = _HOOK_IMPORTS.get(loop)
    if pending is None:
        pending = _HOOK_IMPORTS[loop] = asyncio.ensure_future(asyncio.to_thread(_import_hook_class))
    # Shielded: one trigger cancelled while waiting must not cancel the import for the others.
    return await asyncio.shield(pending)


def _import_hook_class() -> type[GetImageAsyncHook]:
    from airflow_provider_getimage.hooks.getimage import GetImageAsyncHook

    return GetImageAsyncHook
