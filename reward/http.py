"""One retrying HTTP session for the project's clients of OpenAI-compatible servers (the GREEN judge
here, and ``mllm-cxr generate``'s OpenAI backend): :mod:`requests` with
:class:`urllib3.util.Retry`, which retries connection errors, HTTP 429 and 5xx with exponential
backoff and honours the server's ``Retry-After`` header. Imports nothing from the project.
"""

from __future__ import annotations

#: Statuses worth another try: rate limiting and server-side failures.
RETRY_STATUSES = (429, 500, 502, 503, 504)


def retrying_session(retries: int = 2, backoff: float = 1.0, *, max_backoff: float = 30.0,
                     pool_size: int = 16, api_key: str | None = None):
    """A :class:`requests.Session` that retries up to ``retries`` times (at once, then after ``2 * backoff``,
    ``4 * backoff``, ... at most ``max_backoff`` seconds, or what ``Retry-After`` says) on connection errors,
    read errors and :data:`RETRY_STATUSES`, for POST as well as GET. After the last try the final
    response is returned (its status tells what went wrong); a connection that never succeeded raises
    :class:`requests.ConnectionError`. ``api_key`` is sent as a bearer token."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff,
                  backoff_max=max_backoff, status_forcelist=RETRY_STATUSES,
                  allowed_methods=frozenset({"GET", "POST"}), respect_retry_after_header=True,
                  raise_on_status=False)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"
    return session
