"""A real OpenID Connect provider for the single sign-on tests: a small Django project of its own
(django-oauth-toolkit with OIDC on), run as a separate process on loopback by
``python -m tests.oidc_provider.serve`` (see serve.py for what it is given)."""
