"""The dashboard's sessions and CSRF tokens.

With API_TOKEN set, the login form trades the token for a session cookie: HttpOnly,
SameSite=Strict, limited to /ui, signed with a key derived from the token (so every API
process accepts it, and changing the token ends every session). Logging out removes it.

Every mutating form carries a CSRF token equal to the `taskforge_csrf` cookie (a random
value set on the first page a browser sees): another site can neither read the cookie nor,
SameSite=Strict, make the browser send it, so a forged POST has no matching pair. The same
value signs the notice an action's redirect carries (see notice_signature).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from litestar.datastructures import Cookie

from taskforge.entrypoints.http.middleware import DASHBOARD_PATH

UI_PATH = DASHBOARD_PATH
SESSION_COOKIE = "taskforge_session"
CSRF_COOKIE = "taskforge_csrf"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 12 * 3600


def is_ui_path(path: str) -> bool:
    return path == UI_PATH or path.startswith(UI_PATH + "/")


class Sessions:
    """Signs and checks session cookies; with no API_TOKEN every caller is signed in."""

    def __init__(self, api_token: str | None) -> None:
        self._token = api_token
        self._key = (
            hashlib.sha256(b"taskforge-ui-session\0" + api_token.encode()).digest()
            if api_token
            else b""
        )

    @property
    def required(self) -> bool:
        return self._token is not None

    def token_matches(self, offered: str) -> bool:
        assert self._token is not None
        offered_bytes = offered.strip().encode("utf-8", "surrogatepass")
        return hmac.compare_digest(offered_bytes, self._token.encode())

    def new_session(self, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + SESSION_SECONDS)
        body = f"{secrets.token_hex(16)}.{expires}"
        return f"{body}.{self._sign(body)}"

    def is_valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not self.required:
            return True
        # Every cookie this issues is ASCII; hmac.compare_digest refuses other text.
        if not cookie or not cookie.isascii() or cookie.count(".") != 2:
            return False
        body, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return False
        expires = body.rpartition(".")[2]
        return expires.isdigit() and int(expires) > (time.time() if now is None else now)

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()


def csrf_token_of(cookies: Mapping[str, str]) -> str | None:
    token = cookies.get(CSRF_COOKIE)
    return token if token and len(token) == 64 and token.isalnum() else None


def csrf_matches(cookies: Mapping[str, str], submitted: object) -> bool:
    """Whether the form's token is the cookie's: text (a multipart form's field may be a
    file) of ASCII (hmac.compare_digest refuses other text)."""
    expected = csrf_token_of(cookies)
    return (
        expected is not None
        and isinstance(submitted, str)
        and submitted.isascii()
        and hmac.compare_digest(expected.encode(), submitted.encode())
    )


def notice_signature(cookies: Mapping[str, str], notice: str) -> str | None:
    """What signs an action's notice for this browser (an HMAC keyed with its CSRF token):
    a page shows the notice of its query string only when signed, so a link made elsewhere
    cannot put words in the dashboard's mouth."""
    key = csrf_token_of(cookies)
    if key is None:
        return None
    text = notice.encode("utf-8", "surrogatepass")
    return hmac.new(key.encode(), text, hashlib.sha256).hexdigest()


def notice_is_signed(cookies: Mapping[str, str], notice: str, signature: str | None) -> bool:
    expected = notice_signature(cookies, notice)
    return (
        expected is not None
        and signature is not None
        and signature.isascii()
        and hmac.compare_digest(expected, signature)
    )


def new_csrf_token() -> str:
    return secrets.token_hex(32)


def ui_cookie(name: str, value: str, *, secure: bool, max_age: int | None = None) -> Cookie:
    return Cookie(
        key=name,
        value=value,
        path=UI_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
        max_age=max_age,
    )


def expired_cookie(name: str) -> Cookie:
    return Cookie(key=name, value="", path=UI_PATH, httponly=True, samesite="strict", max_age=0)
