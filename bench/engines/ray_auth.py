"""Ray's token authentication, for the clusters we start and the driver that connects.

Ray 2.60 (``ray/_private/authentication/authentication_token_setup.py``): ``ray start --head``
turns token auth on by itself whenever ``~/.ray/auth_token`` exists, unless ``RAY_AUTH_MODE``
is set; the C++ token loader reads ``RAY_AUTH_TOKEN``, then ``RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token``. So the mode is always explicit, and in token mode the token is a fresh
one for each cluster we start, in a 0600 file in the cluster's own temp dir, named by
``RAY_AUTH_TOKEN_PATH`` (``RAY_AUTH_TOKEN``, which would win over it and shows in ``ps e``, is
removed).
"""
from __future__ import annotations

import os
import secrets

from bench.errors import RunError

AuthEnv = dict[str, str | None]  # variable -> value; None removes the variable

DISABLED: AuthEnv = {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": None,
                     "RAY_AUTH_TOKEN_PATH": None}


def new_token_file(directory: str) -> str:
    """A fresh random token in a new 0600 file ``auth_token`` under ``directory``."""
    path = os.path.join(directory, "auth_token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def token_env(token_path: str) -> AuthEnv:
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": token_path}


def auth_from_environment() -> AuthEnv:
    """A cluster we did not start (``--address``): its token comes from the environment only.

    ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` given: token mode (unless ``RAY_AUTH_MODE``
    says otherwise). ``RAY_AUTH_MODE=token`` without either: an error, because Ray would fall
    back to ``~/.ray/auth_token``, whatever that holds. Neither: ``disabled``, explicitly, so
    that nothing in the user's home turns it on.
    """
    env = os.environ
    mode = (env.get("RAY_AUTH_MODE") or "").strip().lower()
    has_token = bool(env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH"))
    if mode not in ("", "token", "disabled"):
        raise RunError(f"RAY_AUTH_MODE={env['RAY_AUTH_MODE']!r}: expected 'token' or 'disabled'")
    if mode == "token" and not has_token:
        raise RunError("RAY_AUTH_MODE=token but neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is "
                       "set: give the cluster's token in the environment (~/.ray/auth_token is "
                       "never read)")
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if path and not env.get("RAY_AUTH_TOKEN") and not os.path.isfile(path):
        raise RunError(f"RAY_AUTH_TOKEN_PATH={path!r}: no such file")
    if mode == "disabled" or not has_token:
        return {"RAY_AUTH_MODE": "disabled"}
    return {"RAY_AUTH_MODE": "token"}


def use_driver_auth(auth: AuthEnv) -> str:
    """Make this process (the driver) use ``auth`` for its next ``ray.init``; returns the mode.

    Ray caches both the mode (RayConfig) and the token (the C++ AuthenticationTokenLoader) per
    process; each cluster has its own token, so both caches are refreshed here, the way Ray's
    own ``_enable_token_auth`` and ``ensure_token_if_auth_enabled`` refresh them.
    """
    for k, v in auth.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        # ray._raylet is a compiled module: mypy sees none of its names.
        from ray._raylet import (  # type: ignore[attr-defined]
            AuthenticationTokenLoader,
            Config,
        )

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except ImportError:  # pragma: no cover - a Ray without token auth
        pass
    return os.environ.get("RAY_AUTH_MODE", "disabled")


def driver_token() -> str | None:
    """The token this process will send (after :func:`use_driver_auth`), or None."""
    if os.environ.get("RAY_AUTH_MODE") != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    try:
        with open(os.environ["RAY_AUTH_TOKEN_PATH"]) as f:
            return f.read().strip()
    except (KeyError, OSError):
        return None


def gcs_accepts(address: str, token: str | None, timeout: float = 10) -> bool:
    """False only when the GCS answers UNAUTHENTICATED to ``GetClusterId`` (the first call
    every Ray client makes) with ``token`` as its bearer token, as Ray's own clients send it
    (``authorization: Bearer``; ``ray/_private/authentication/``). Anything else (an old Ray
    without the method, a slow GCS) is left to ``ray.init`` to report."""
    try:
        import grpc  # type: ignore[import-untyped]  # grpcio ships no type stubs
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # pragma: no cover
        return True
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(address) as channel:
        # Generated gRPC/protobuf code: unannotated, and its message classes are made at
        # import time, so mypy knows neither.
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
            stub.GetClusterId(request, timeout=timeout,
                              metadata=metadata)
        except grpc.RpcError as e:
            return bool(e.code() != grpc.StatusCode.UNAUTHENTICATED)
    return True


def auth_failure(e: BaseException | None) -> bool:
    """Whether ``ray.init`` failed on authentication: its ``ConnectionError`` carries the
    ``AuthenticationError`` as its cause (``ray/_private/worker.py``, ``init``)."""
    seen = 0
    while e is not None and seen < 10:
        text = f"{type(e).__name__} {e}".lower()
        if any(s in text for s in ("authenticat", "auth token", "unauthenticated", "token-auth")):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def auth_error(address: str, mode: str | None, rejected: str = "") -> RunError:
    """The one message for a cluster that refused our authentication: no token given (``mode``
    disabled), or the wrong one (``rejected``: what more to say about it)."""
    if mode == "disabled":
        return RunError(
            f"the Ray cluster at {address!r} requires token authentication and no token was "
            "given: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, a file holding it) in the "
            "environment; ~/.ray/auth_token is never read")
    return RunError(f"the Ray cluster at {address!r} rejected the authentication token "
                    f"(RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH){rejected}")
