"""The garbage collector: deletes dependents whose owners are gone, honouring
``propagationPolicy`` and the ``orphan``/``foregroundDeletion`` finalizers."""
from __future__ import annotations

import asyncio
import collections
import copy

from .apimachinery import FOREGROUND, ORPHAN


class GarbageCollectorMixin:
    """The garbage collector of :class:`PatchedEmulator`, run as a task after changes."""

    __slots__ = ()

    def _wake_collector(self) -> None:
        """Run the garbage collector soon, after the current request (it is a controller)."""
        self._gc_pending = True
        if self._gc_task is None or self._gc_task.done():
            self._gc_task = asyncio.get_running_loop().create_task(self._collect_garbage())

    async def garbage_collected(self) -> None:
        """Wait until the garbage collector has nothing left to do (for tests)."""
        while self._gc_task is not None and not self._gc_task.done():
            await asyncio.shield(self._gc_task)

    async def _collect_garbage(self) -> None:
        try:
            while self._gc_pending:
                self._gc_pending = False
                async with self._lock:
                    for _ in range(100_000):
                        if not await self._gc_step():
                            break
        except Exception as e:  # an emulator bug: surfaced in ``errors`` like a failed request
            if not self._errors:
                raise
            self._errors[-1].append(e)

    def _resolvable(self, ref: dict) -> bool:
        group, _, version = str(ref.get("apiVersion", "")).rpartition("/")
        return any(r.group == group and r.version == version
                   and self.resources[r].kind == ref.get("kind") for r in self.resources)

    async def _gc_step(self) -> bool:
        """One change of the garbage collector, if any is due (pkg/controller/garbagecollector/
        garbagecollector.go: orphanDependents, processDeletingDependentsItem, attemptToDeleteItem
        with classifyReferences). Owners are found by uid among the live objects."""
        alive = {key: o.raw for key, o in self._objects.items() if not o.deleted}
        by_uid = {raw["metadata"].get("uid"): (key, raw) for key, raw in alive.items()}
        dependents: dict[str, list[tuple[tuple, dict]]] = collections.defaultdict(list)
        for key, raw in alive.items():
            for ref in raw["metadata"].get("ownerReferences") or []:
                dependents[ref.get("uid")].append((key, ref))
        return (await self._gc_owner_step(alive, dependents)
                or await self._gc_dependent_step(alive, by_uid, dependents))

    async def _gc_owner_step(self, alive: dict[tuple, dict],
                             dependents: dict[str, list[tuple[tuple, dict]]]) -> bool:
        """Owners being deleted with a GC finalizer: orphan the dependents, or finish a
        foreground deletion that no dependent blocks any more."""
        for key, raw in alive.items():
            meta = raw["metadata"]
            finalizers = meta.get("finalizers") or []
            if not meta.get("deletionTimestamp"):
                continue
            if ORPHAN in finalizers:
                for dep_key, _ in dependents.get(meta["uid"], []):
                    dep = copy.deepcopy(self._objects[dep_key].raw)
                    refs = [r for r in dep["metadata"].pop("ownerReferences")
                            if r.get("uid") != meta["uid"]]
                    if refs:  # an empty list is omitted (omitempty)
                        dep["metadata"]["ownerReferences"] = refs
                    await self._commit(dep_key, dep)
                await self._remove_finalizer(key, ORPHAN)
                return True
            if FOREGROUND in finalizers and not any(
                    ref.get("blockOwnerDeletion") for _, ref in dependents.get(meta["uid"], [])):
                await self._remove_finalizer(key, FOREGROUND)
                return True
        return False

    async def _gc_dependent_step(self, alive: dict[tuple, dict], by_uid: dict[str, tuple],
                                 dependents: dict[str, list[tuple[tuple, dict]]]) -> bool:
        """Dependents: drop references to owners that are gone, delete those with no owner
        left."""
        for key, raw in alive.items():
            meta = raw["metadata"]
            refs = meta.get("ownerReferences") or []
            if not refs or meta.get("deletionTimestamp"):
                continue
            solid, gone, waiting = self._classify_references(key, refs, by_uid)
            if solid:
                if gone:  # drop the references to dangling or foreground-deleting owners
                    dep = copy.deepcopy(raw)
                    dep["metadata"]["ownerReferences"] = solid
                    await self._commit(key, dep)
                    return True
                continue
            own = meta.get("finalizers") or []
            policy = ("Foreground" if waiting and dependents.get(meta.get("uid")) else
                      "Orphan" if ORPHAN in own else
                      "Foreground" if FOREGROUND in own else "Background")
            await self._delete(key, policy)
            return True
        return False

    def _classify_references(self, key: tuple, refs: list[dict],
                             by_uid: dict[str, tuple]) -> tuple[list[dict], list[dict], bool]:
        """classifyReferences: the references to live owners (solid), to owners that are gone
        or being deleted in the foreground (gone), and whether one of those is the latter."""
        solid, gone = [], []
        waiting = False
        for ref in refs:
            hit = by_uid.get(ref.get("uid"))
            if hit is None:
                # an owner whose kind is not served (unresolvable) is retried forever
                (gone if self._resolvable(ref) else solid).append(ref)
                continue
            (_, owner_ns, owner_name), owner = hit
            if owner.get("kind") != ref.get("kind") or owner_name != ref.get("name") or (
                    owner_ns is not None and owner_ns != key[1]):
                gone.append(ref)
            elif owner["metadata"].get("deletionTimestamp") and FOREGROUND in (
                    owner["metadata"].get("finalizers") or []):
                gone.append(ref)
                waiting = True
            else:
                solid.append(ref)
        return solid, gone, waiting

    async def _remove_finalizer(self, key: tuple, finalizer: str) -> None:
        obj = copy.deepcopy(self._objects[key].raw)
        obj["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != finalizer]
        if not obj["metadata"]["finalizers"]:
            del obj["metadata"]["finalizers"]
        await self._commit(key, obj)
