"""The session cookie: signed again when the session changes, not on every status poll, and checked once."""

from __future__ import annotations

import copy
import functools
from datetime import UTC, datetime, timedelta

from flask import Flask, Request, Response
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.http import parse_cookie

from .negotiate import add_vary


class SignedSession(SecureCookieSession):
    #: When the cookie this session came from was signed; None for a new session.
    signed_at: datetime | None = None


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the cookie sent only when it has something new to say.

    Flask re-signs and re-sends a permanent session's cookie on every response
    (``SESSION_REFRESH_EACH_REQUEST``), only to push its expiry forward: a
    signature and a ``Set-Cookie`` per status poll. Here the cookie is sent when
    the session changes, and otherwise at most once per ``refresh_after``, so a
    browser that keeps coming back keeps its session, as before, within a day.
    The serializer is made once per secret key, not twice per request, and a
    cookie is checked once per process (``verified``), not on every poll.
    """

    session_class = SignedSession
    #: A permanent session's unchanged cookie is signed again, with a new expiry, once it is this old.
    refresh_after = timedelta(days=1)

    def __init__(self) -> None:
        self._serializers: dict[tuple, URLSafeTimedSerializer] = {}

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.secret_key:
            return None
        keys = (*(app.config["SECRET_KEY_FALLBACKS"] or ()), app.secret_key)
        serializer = self._serializers.get(keys)
        if serializer is None:
            serializer = self._serializers[keys] = super().get_signing_serializer(app)
        return serializer

    def open_session(self, app: Flask, request: Request) -> SignedSession | None:
        serializer = self.get_signing_serializer(app)
        if serializer is None:
            return None
        found = self.read_cookie(app, cookie_value(request.headers.get("Cookie"), self.get_cookie_name(app)))
        if found is None:
            return self.session_class()
        data, signed_at = found
        # The cached data is shared; the session gets its own copy of anything it could change in place.
        session = self.session_class(
            {k: v if isinstance(v, str | int | float) else copy.deepcopy(v) for k, v in data.items()}
        )
        session.signed_at = signed_at
        return session

    def read_cookie(self, app: Flask, value: str | None) -> tuple[dict, datetime] | None:
        """The data of a session cookie and when it was signed; None if it is missing, forged or expired.

        The data is shared between requests: read it, never change it.
        """
        serializer = self.get_signing_serializer(app)
        if not value or serializer is None:
            return None
        try:
            data, signed_at = verified(serializer, value)
        except BadSignature:
            return None
        # As itsdangerous's max_age: an expired cookie, or one signed in the future, starts a new session.
        age = datetime.now(UTC) - signed_at
        if age > app.permanent_session_lifetime or age < timedelta(0):
            return None
        return data, signed_at

    def unchanging_session(self, app: Flask, cookie_header: str | None) -> dict | None:
        """The session data of a request's ``Cookie`` header, if an answer needs no ``Set-Cookie``; else None.

        For answers made without Flask (``webapp.early_polls``): such an answer cannot send a
        cookie, so a session that is due to be refreshed, like one that is missing, gets None.
        """
        found = self.read_cookie(app, cookie_value(cookie_header, self.get_cookie_name(app)))
        if found is None:
            return None
        data, signed_at = found
        return None if self.due_for_refresh(app, data.get("_permanent", False), signed_at) else data

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if session.modified or (session and self.should_set_cookie(app, session)):
            super().save_session(app, session, response)
        elif session.accessed:
            # What Flask does for a session it neither changes nor sends, without parsing Vary into a set and back.
            add_vary(response, "Cookie")

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        return session.modified or self.due_for_refresh(app, session.permanent, getattr(session, "signed_at", None))

    def due_for_refresh(self, app: Flask, permanent: bool, signed_at: datetime | None) -> bool:
        """Whether an unchanged session's cookie is signed and sent again, to push its expiry forward."""
        if not permanent:
            return False
        if app.config["SESSION_REFRESH_EACH_REQUEST"]:
            return True
        return signed_at is None or datetime.now(UTC) - signed_at >= self.refresh_after


@functools.lru_cache(maxsize=8192)
def verified(serializer: URLSafeTimedSerializer, value: str) -> tuple[dict, datetime]:
    """The data of a session cookie and when it was signed, once its signature is checked; raises BadSignature.

    Every status poll brings the same cookie, whose signature, decompression
    and JSON cost a fifth of a 304. Only a cookie that passed the check is
    kept, keyed by its whole value, so a forged one is checked every time.
    """
    return serializer.loads(value, return_timestamp=True)


@functools.lru_cache(maxsize=8192)
def cookie_value(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header; a browser sends the same header with every poll."""
    return parse_cookie(header).get(name) if header else None
