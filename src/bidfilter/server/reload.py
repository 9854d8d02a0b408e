"""Watching the store's LATEST pointer and validating new versions before workers see them.

A new version is fetched into the local cache (checked file by file against its manifest),
loaded and smoke-tested here once; only then are the workers told to swap. A version that fails
is refused and remembered (versions are immutable, so retrying it cannot help) and the current
model keeps serving. A store that cannot be reached is retried at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bidfilter.artifact import ArtifactError, ModelStore, StoreError
from bidfilter.scoring import ServingModel

log = logging.getLogger(__name__)

_RETRY_WITHOUT_MODEL_S = 2.0  # with nothing to serve, look again soon rather than every poll


@dataclass(frozen=True, slots=True)
class LoadedVersion:
    version: str
    path: Path
    generation: int
    partners: tuple[str, ...]


class ModelWatcher:
    def __init__(
        self,
        store: ModelStore,
        cache_dir: Path,
        poll_s: float,
        on_version: Callable[[LoadedVersion], None],
    ) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.poll_s = poll_s
        self.on_version = on_version
        self.current: LoadedVersion | None = None
        self.refused: dict[str, str] = {}
        self.successes = 0
        self.failures = 0
        self.store_failures = 0  # looks at the store that failed; the next poll tries again
        self.errors = 0  # polls that raised something unexpected (logged; polling goes on)
        self._store_error_logged = False

    async def check(self) -> LoadedVersion | None:
        """Look at LATEST once; load it if it is new. Returns the version now current."""
        try:
            latest = await asyncio.to_thread(self.store.latest)
        except StoreError as error:
            self.store_failures += 1
            if not self._store_error_logged:
                log.warning("model store %s unreachable: %s", self.store.uri, error)
                self._store_error_logged = True
            return self.current
        if self._store_error_logged:
            log.info("model store %s answers again", self.store.uri)
            self._store_error_logged = False
        if latest is None:
            if self.current is None:
                log.warning("model store %s has no published version yet", self.store.uri)
            return self.current
        if (self.current is not None and latest == self.current.version) or latest in self.refused:
            return self.current
        try:
            path = await asyncio.to_thread(self.store.fetch, latest, self.cache_dir)
            model = await asyncio.to_thread(ServingModel.load, path)
        except StoreError as error:
            self.store_failures += 1
            log.warning("could not fetch version %s: %s (will retry)", latest, error)
            return self.current
        except (ArtifactError, OSError, ValueError) as error:
            self.failures += 1
            self.refused[latest] = str(error)
            log.error(
                "refused model version %s: %s; still serving %s",
                latest,
                error,
                self.current.version if self.current else "nothing (fail open)",
            )
            return self.current
        except Exception as error:  # a bug the version triggers: refuse it, keep watching
            self.failures += 1
            self.refused[latest] = f"{type(error).__name__}: {error}"
            log.exception(
                "refused model version %s: loading it raised %s; still serving %s",
                latest,
                type(error).__name__,
                self.current.version if self.current else "nothing (fail open)",
            )
            return self.current
        generation = (self.current.generation if self.current else 0) + 1
        self.current = LoadedVersion(latest, path, generation, model.partners)
        self.successes += 1
        log.info("model version %s verified (generation %d)", latest, generation)
        self.on_version(self.current)
        return self.current

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # one poll's bug must not end the polling (and every reload)
                self.errors += 1
                log.exception("model watcher: the look at %s failed; polling on", self.store.uri)
            await asyncio.sleep(
                self.poll_s if self.current else min(self.poll_s, _RETRY_WITHOUT_MODEL_S)
            )
