"""ASGI entry point: inference paths to a middleware-free Django handler, pages to the full one,
static files to WhiteNoise, websockets (the live meter) to Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenfactory.settings")
django.setup(set_prefix=False)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from gateway import tokens  # noqa: E402
from gateway.providers.transport import ssl_context  # noqa: E402
from tokenfactory.handlers import MiddlewareFreeASGIHandler, Router, static_app  # noqa: E402
from tokenfactory.routing import responses_first, websocket_urlpatterns  # noqa: E402
from tokenfactory.runtime import settle_collector  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": Router(ASGIHandler(), MiddlewareFreeASGIHandler(), static_app()),
        "websocket": responses_first(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)

# Load now what Django and the upstream client would load on the first request: the URL map
# imports every view module (ninja, DRF, the SDK-shaped views; over a second here), the TLS
# context reads the CA bundle and the tokenizer its vocabulary (~0.3 s: every chat request's
# input is measured with it). Otherwise the first callers of each new worker wait for all three.
get_resolver().url_patterns  # noqa: B018 (the property imports the URL conf)
ssl_context()
tokens.warm()

# Django, the apps and the URL map stay for the life of the process.
settle_collector()
