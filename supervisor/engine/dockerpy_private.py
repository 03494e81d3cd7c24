"""The ONE place that touches docker-py's private API; every other module uses its public API.

Why private at all: the container log followers (engine/logs.py) need the raw
`GET /containers/<id>/logs` body to keep stdout and stderr apart (docker-py's public
`logs(stream=True)` yields frame payloads without saying which stream each came from), and
they must cut a quiet, hours-long stream from another thread (docker-py only offers that on a
`CancellableStream` it built itself). So we use, from docker-py 7.x:

- `APIClient._url(pathfmt, *args)`: the versioned URL of an endpoint (args are quoted);
- `APIClient._get(url, **kwargs)`: a GET on the client's session (`stream=True` keeps the
  body unread);
- `APIClient._raise_for_status(response)`: HTTP errors -> `docker.errors.APIError` subclasses
  (404 -> `NotFound`, which ends a follower);
- `CancellableStream(stream, response).close()`, built by hand around our response: shuts the
  response's socket down so a blocked read returns at once.

`tests/unit/test_dockerpy_private.py` fails if docker-py renames these or changes the
signatures we call; `tests/integration/test_logs.py` exercises them on the real engine (the
stdout/stderr split, unfollow ending a quiet stream). Blocking: call from a worker thread.
"""

from __future__ import annotations

from typing import Any

import docker
import requests
from docker.types import CancellableStream

# What this module relies on, by owner: checked by the unit test above.
PRIVATE_API: dict[str, tuple[str, ...]] = {
    "APIClient._url": ("self", "pathfmt", "args", "kwargs"),
    "APIClient._get": ("self", "url", "kwargs"),
    "APIClient._raise_for_status": ("self", "response"),
    "CancellableStream.__init__": ("self", "stream", "response"),
    "CancellableStream.close": ("self",),
}


def open_stream(api: docker.APIClient, pathfmt: str, *args: str,
                params: dict[str, Any]) -> requests.Response:
    """`GET <pathfmt % args>?params` with the body left unread (`stream=True`). The status is
    not checked: hand the response to `shutdown` first if another thread may cancel it, then
    call `raise_for_status`."""
    response: requests.Response = api._get(api._url(pathfmt, *args), params=params,
                                            stream=True)
    return response


def raise_for_status(api: docker.APIClient, response: requests.Response) -> None:
    """Raise docker-py's error for a failed response (`docker.errors.NotFound` on 404)."""
    api._raise_for_status(response)


def shutdown(response: requests.Response) -> None:
    """Shut the response's socket down (any thread): a read blocked on it returns at once.
    Raises when the socket is already gone; callers treat that as done."""
    CancellableStream(iter(()), response).close()
