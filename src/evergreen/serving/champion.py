"""The model the service scores with: the registry's champion, loaded at start-up and swapped for a newly
promoted one by a watcher thread.

Start-up with a champion that cannot be served (a truncated graph, a signature that does not fit the declared
features) is an outage if the service refuses to start. With `serve.fallback: previous` (the default) it serves
the newest earlier champion that loads instead (earlier champions are read from the registry's promotion and
rollback history, newest first), says so loudly in its log, and reports `fallback: {wanted, serving, reason}` on
`/health` and `/model` until the champion pointer names a version it serves. With `serve.fallback: none` it
refuses to start. A version never promoted is never a fallback: only champions passed the gate.

Hot-swap: every `serve.reload_interval_s` the watcher reads the `CHAMPION` pointer; when it names another
version, the watcher loads that version completely (session built, signature checked against the declaration)
and only then replaces the one reference requests read. In-flight requests finish on the version they started
with, and no request waits on a load. A version that fails to load is reported once and skipped (and reported
as a fallback); the version being served keeps serving.

The shadow (`Shadow`): the registry's `SHADOW` version, a challenger scored beside the champion on every request
but never answering (see `evergreen.registry.shadow`). The same watcher loads it when the pointer changes and
drops it when the pointer goes. Serving never depends on it: a shadow that cannot load (or names the champion)
is reported once and ignored.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import asdict, dataclass

from evergreen.config import DataConfig
from evergreen.errors import ServeError
from evergreen.inference import ServingModel, check_compatible, load_champion
from evergreen.registry.store import Registry
from evergreen.serving.schema import clip

__all__ = ["Champion", "Fallback", "Shadow", "earlier_champions"]

logger = logging.getLogger("evergreen.serve")
_REASON_LIMIT = 300


@dataclass(frozen=True)
class Fallback:
    """The service is not serving the champion it was asked to: which it wanted, which it serves, and why."""

    wanted: str
    serving: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def earlier_champions(registry: Registry, current: str) -> list[str]:
    """The versions that were champion before, most recently champion first, without `current`."""
    events = [e.get("version") for e in registry.history() if e.get("event") in ("promote", "rollback")]
    return [v for v in dict.fromkeys(reversed(events)) if v and v != current]


class Shadow:
    """The registry's shadow model, loaded beside the champion; `model` is None when there is none to score."""

    def __init__(self, registry: Registry, data: DataConfig):
        self.registry, self.data = registry, data
        self.model: ServingModel | None = None
        self._failed: set[str] = set()  # versions that could not be loaded (reported once each)

    def refresh(self, champion: str) -> bool:
        """Load the version the `SHADOW` pointer names, or drop the shadow; True when it changed."""
        try:
            version = self.registry.shadow()
        except Exception as exc:  # a damaged pointer: no shadow, and serving goes on
            version = None
            if "damaged-pointer" not in self._failed:
                self._failed.add("damaged-pointer")
                logger.error("the shadow pointer cannot be read, scoring without a shadow: %s", exc)
        if version == champion or version in self._failed:  # promoted (the pointer goes next), or unloadable
            version = None
        current = self.model.version if self.model is not None else None
        if version == current:
            return False
        if version is None:
            self.model = None
            logger.warning("no shadow model any more (was %s)", current)
            return True
        try:
            model = load_champion(self.registry, threads=1, version=version)
            check_compatible(model, self.data)
        except Exception as exc:  # never breaks serving: reported once, then ignored
            self._failed.add(version)
            logger.error("shadow %s cannot be loaded, scoring without it: %s", version, clip(str(exc), _REASON_LIMIT))
            self.model = None
            return current is not None
        self.model = model  # one reference: requests take it once
        logger.warning("scoring shadow %s beside the champion", version)
        return True


class Champion:
    """The model requests are served with, and the watcher that swaps in a newly promoted one (and the shadow)."""

    def __init__(self, registry: Registry, data: DataConfig, interval_s: float, fallback: str = "previous"):
        self.registry, self.data, self.interval_s = registry, data, interval_s
        self.fallback: Fallback | None = None
        self._failed: dict[str, str] = {}  # versions that could not be served, and why (tried once each)
        self.model = self._start(fallback)
        self.shadow = Shadow(registry, data)
        self.shadow.refresh(self.model.version)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)

    def _load(self, version: str | None) -> ServingModel:
        model = load_champion(self.registry, threads=1, version=version)
        check_compatible(model, self.data)
        return model

    def _start(self, policy: str) -> ServingModel:
        wanted = self.registry.champion()
        if wanted is None:
            return self._load(None)  # raises RegistryError: no champion, promote one first
        try:
            return self._load(wanted)
        except Exception as exc:  # a corrupt graph or signature raises all sorts
            if policy == "none":
                raise
            reason = clip(str(exc), _REASON_LIMIT)
        tried = []
        for version in earlier_champions(self.registry, wanted):
            try:
                model = self._load(version)
            except Exception as exc:
                tried.append(f"{version} ({clip(str(exc), _REASON_LIMIT)})")
                continue
            logger.error(
                "FALLBACK: the champion %s cannot be served (%s); serving the earlier champion %s instead "
                "(serve.fallback: previous). Promote a version that loads, or roll back.",
                wanted,
                reason,
                version,
            )
            self.fallback, self._failed[wanted] = Fallback(wanted, version, reason), reason
            return model
        earlier = "; ".join(tried) or "there is none in the registry's history"
        raise ServeError(f"the champion {wanted} cannot be served ({reason}), nor an earlier champion: {earlier}")

    def refresh(self) -> bool:
        """Swap to the registry's champion if it changed; True when a swap happened."""
        version = self.registry.champion()
        if version is None:
            return False
        if version == self.model.version:
            if self.fallback is not None:  # the pointer came back to the version being served
                logger.warning("the champion is %s again, the version being served: no fallback any more", version)
                self.fallback = None
            return False
        if version in self._failed:
            self.fallback = Fallback(version, self.model.version, self._failed[version])
            return False
        try:
            model = self._load(version)  # fully loaded before anyone can see it
        except Exception as exc:  # keep serving the old champion; say why once
            self._failed[version] = clip(str(exc), _REASON_LIMIT)
            self.fallback = Fallback(version, self.model.version, self._failed[version])
            logger.error("champion %s cannot be served, still serving %s: %s", version, self.model.version, exc)
            return False
        self.fallback = None
        self.model = model  # one reference: requests take it once
        logger.warning("now serving champion %s", version)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(Exception):  # a registry being rewritten is read again next time
                self.refresh()
            with contextlib.suppress(Exception):
                self.shadow.refresh(self.model.version)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
