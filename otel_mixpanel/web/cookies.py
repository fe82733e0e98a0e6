"""A cookie for the response to set, as a value any server integration can write.

WSGI and ASGI middleware send ``header()`` as a ``Set-Cookie`` header; Django passes
the fields to ``response.set_cookie``. Values must already be cookie-safe (the callers
percent-encode them), so no integration quotes them differently.
"""

from __future__ import annotations

from email.utils import formatdate
from time import time
from typing import Any, NamedTuple


class SetCookie(NamedTuple):
    name: str
    value: str
    max_age: int  # 0 deletes the cookie
    path: str = "/"
    domain: str | None = None
    secure: bool = False
    httponly: bool = True
    samesite: str | None = "Lax"

    def header(self) -> str:
        parts = [
            f"{self.name}={self.value}",
            f"Max-Age={self.max_age}",
            f"Expires={formatdate(time() + self.max_age if self.max_age > 0 else 0, usegmt=True)}",
            f"Path={self.path}",
        ]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if self.secure:
            parts.append("Secure")
        if self.httponly:
            parts.append("HttpOnly")
        if self.samesite:
            parts.append(f"SameSite={self.samesite}")
        return "; ".join(parts)

    def django_arguments(self) -> dict[str, Any]:
        """Keyword arguments of Django's ``HttpResponse.set_cookie``."""
        return {"key": self.name, "value": self.value, "max_age": self.max_age, "path": self.path,
                "domain": self.domain, "secure": self.secure, "httponly": self.httponly,
                "samesite": self.samesite}
