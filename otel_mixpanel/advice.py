"""What to tell a user whose events carry no identity: the middleware that fits their stack.

The stack is read from the instrumentation scope of the request's server span, so that
a FastAPI app is not told to add the WSGI middleware (which cannot serve an ASGI app).
"""

from __future__ import annotations

NO_IDENTITY = (
    "Mixpanel events are being sent without a user: no span of the request carries "
    "enduser.pseudo.id (anonymous device id) or enduser.id / user.id (logged-in user). "
)
IDENTIFY = ("Call otel_mixpanel.identify(user_id), or set enduser.id on the current span, once the user is known. "
            "See docs/web.md.")

# (substring of the instrumentation scope name, the set-up that gives every browser a device id)
_MIDDLEWARE = (
    ("django", 'Add "otel_mixpanel.web.django.MixpanelMiddleware" to Django\'s MIDDLEWARE (WSGI and ASGI alike). '),
    ("fastapi", "Add app.add_middleware(otel_mixpanel.web.asgi.MixpanelMiddleware) to the FastAPI app. "),
    ("starlette", "Add app.add_middleware(otel_mixpanel.web.asgi.MixpanelMiddleware) to the Starlette app. "),
    ("asgi", "Wrap the ASGI app: app = otel_mixpanel.web.asgi.MixpanelMiddleware(app) "
             "(FastAPI/Starlette: app.add_middleware(MixpanelMiddleware)). "),
    ("flask", "Add otel_mixpanel.web.flask.MixpanelFlask(app) to the Flask app. "),
    ("wsgi", "Wrap the WSGI app: app = otel_mixpanel.web.MixpanelMiddleware(app). "),
)
_ANY_STACK = ("Add otel_mixpanel.web's middleware for your stack to give every browser a device id: "
              "web.MixpanelMiddleware (WSGI), web.asgi.MixpanelMiddleware (ASGI: FastAPI, Starlette), "
              "web.flask.MixpanelFlask or web.django.MixpanelMiddleware. ")
_JOB = ("These events come from spans that are not an HTTP request (a background job, say). A job enqueued "
        "by a request takes that request's ids when the worker exports through "
        "otel_mixpanel.sampling.MixpanelSpanProcessor (or adds otel_mixpanel.jobs.BaggageIdentityProcessor); "
        "a job of its own sets enduser.id or enduser.pseudo.id on its span. See docs/identity.md. ")


def no_identity_advice(server_scope: str | None) -> str:
    """The warning for events without identity; ``server_scope`` names the server span's instrumentation."""
    if server_scope is None:
        return NO_IDENTITY + _JOB + IDENTIFY
    name = server_scope.lower()
    middleware = next((advice for key, advice in _MIDDLEWARE if key in name), _ANY_STACK)
    return NO_IDENTITY + middleware + IDENTIFY
