"""The event log and watches: every change is logged and published under the emulator's lock,
and a watch subscribes atomically with its snapshot or replay."""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
from kmock import resource
from kmock._internal import rendering  # private: kmock==0.8 is pinned

from .tables import table_version


class WatchMixin:
    """Events and watch streams of :class:`PatchedEmulator`."""

    __slots__ = ()

    def _bump(self, obj: dict) -> dict:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        return obj

    async def _emit(self, res: resource, etype: str, raw: dict) -> None:
        """Log and publish an event of a storage resource. Always called while holding
        ``self._lock``."""
        event = {"type": etype, "object": raw}
        log = self._log[res]
        log.append((int(raw["metadata"]["resourceVersion"]), event))
        while len(log) > max(self.watch_cache_size, 1):
            log.popleft()
            self._log_trimmed.add(res)
        await self._buses[res].put(event)


    def cut_watches(self) -> int:
        """Drop every open watch connection now, as a network failure would (clients resume
        from the last resourceVersion they saw). Returns how many were cut."""
        cut = 0
        for raw in list(self._watches.values()):
            transport = raw.transport
            if transport is not None:
                transport.abort()
                cut += 1
        return cut


    async def _serve_watch_stream(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """A watch response as the apiserver writes it: ``Content-Type: application/json``
        (a JSON watch keeps the plain type; other encodings get ``;stream=watch``:
        serveWatchHandler in staging/src/k8s.io/apiserver/pkg/endpoints/handlers/watch.go),
        one JSON event per line, objects in the requested version or as Tables (column
        definitions only in the first, as watchEmbeddedEncoder does)."""
        as_table = table_version(request)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        headers_sent = False
        async with contextlib.aclosing(self._serve_watch(request)) as stream:
            with contextlib.suppress(StopAsyncIteration):
                await anext(stream)  # a malformed selector is a 400, before the headers go out
            await response.prepare(request._raw_request)
            self._watches[id(response)] = request._raw_request
            try:
                async for event in stream:
                    out = event
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        obj = self._present(event["object"], request.resource)
                        if as_table:
                            obj = self._table(request, [obj],
                                              obj["metadata"].get("resourceVersion", ""),
                                              as_table, headers=not headers_sent)
                            headers_sent = True
                        out = {"type": event["type"], "object": obj}
                    await response.write(json.dumps(out).encode() + b"\n")
            except ConnectionError:
                return response  # the client left, or the connection was cut
            except Exception as e:
                raise rendering.StreamingError(response) from e
            finally:
                self._watches.pop(id(response), None)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        """The events of a watch: first ``b""`` (the headers can go), then the snapshot or the
        replay, then live events, as stored (see :meth:`_serve_watch_stream`)."""
        self._check_selectors(request)  # a malformed selector is a 400, before the stream starts
        yield b""
        res, since = self._store_of(request.resource), request.params.get("resourceVersion")
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        bus = self._buses[res]
        expired = None
        # THE RACE FIX: the snapshot (or the replay) and the subscription happen atomically, under
        # the lock that every mutation holds while publishing its event.
        async with self._lock:
            mark = await bus.mark()
            if since and since.isdigit() and since != "0":
                log = self._log[res]
                oldest = log[0][0] if log else self._rv + 1
                if res in self._log_trimmed and int(since) < oldest - 1:
                    # getAllEventsSinceLocked in staging/src/k8s.io/apiserver/pkg/storage/cacher/
                    # watch_cache.go; the cacher sends it as a watch ERROR event (newErrWatcher).
                    expired = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Failure",
                               "message": f"too old resource version: {since} ({oldest - 1})",
                               "reason": "Expired", "code": 410}
                events = [ev for rv, ev in log if rv > int(since)]
            else:
                events = [{"type": "ADDED", "object": o} for o in self._select(request)]
        try:
            if expired is not None:
                yield {"type": "ERROR", "object": expired}
                return
            for ev in events:
                if self._wanted(request, ev["object"]):
                    yield ev
            cut = self.watch_cut_seconds
            try:
                async with asyncio.timeout(timeout if cut is None else min(timeout or cut, cut)):
                    async for ev in bus.stream(since=mark):
                        if self._wanted(request, ev["object"]):
                            yield ev
            except TimeoutError:
                if cut is not None and request._raw_request is not None:
                    transport = request._raw_request.transport
                    if transport is not None:
                        transport.abort()  # a dropped connection, not a clean end of stream
                return                                     # like ?timeoutSeconds= on the apiserver
        finally:
            await bus.unmark(mark)
