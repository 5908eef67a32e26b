"""agh: the light client side — wire types, client and CLI. Never imports aghd."""

__version__ = "0.1.0"
