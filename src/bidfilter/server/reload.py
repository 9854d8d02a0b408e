"""Watching the store's LATEST pointer and validating new versions before workers see them.

A new version is fetched into the local cache (checked file by file against its manifest),
loaded and smoke-tested here once; only then are the workers told to swap. A version that fails
is refused and remembered (versions are immutable, so retrying it cannot help), its cached copy
removed, and the current model keeps serving. What may pass is not the version's fault and is
retried: a store that cannot be reached (at the next poll), and a local error while fetching or
loading (a full or unreadable cache: with backoff, logged once per version with its path).

The current version's cached copy is what a replacement worker loads; if it goes missing (the
cache directory cleaned), it is fetched again rather than leaving that worker to fail open.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bidfilter.artifact import MANIFEST_NAME, ArtifactError, ModelStore, StoreError, verify
from bidfilter.scoring import ServingModel

log = logging.getLogger(__name__)

_RETRY_WITHOUT_MODEL_S = 2.0  # with nothing to serve, look again soon rather than every poll
_MAX_BACKOFF_S = 300.0  # a version failing on a local error is tried at least this often


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
        self.restores = 0  # times the current version was fetched again into the cache
        self._store_error_logged = False
        self._no_latest_logged = False
        self._restore_failed = False  # logged once until a restore works
        # Versions whose fetch failed for a reason that may pass: failures so far, next try.
        self._retries: dict[str, tuple[int, float]] = {}

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
            if not self._no_latest_logged:  # once: a version is logged when one comes
                self._no_latest_logged = True
                if self.current is None:
                    log.warning("model store %s has no published version yet", self.store.uri)
                else:  # a store emptied or deleted under a running server: serve on
                    log.warning(
                        "model store %s has no LATEST version any more (deleted?); serving %s",
                        self.store.uri,
                        self.current.version,
                    )
            return self.current
        self._no_latest_logged = False
        if (self.current is not None and latest == self.current.version) or latest in self.refused:
            return self.current
        failed_before, retry_at = self._retries.get(latest, (0, 0.0))
        if time.monotonic() < retry_at:
            return self.current
        try:
            path = await asyncio.to_thread(self.store.fetch, latest, self.cache_dir)
            model = await asyncio.to_thread(ServingModel.load, path)
        except StoreError as error:  # the store, not us: try again at the next poll
            self._retry_later(latest, failed_before, error, backoff=False)
            return self.current
        except OSError as error:  # our disk: a full one does not free itself every poll
            self._retry_later(latest, failed_before, error, backoff=True)
            return self.current
        except (ArtifactError, ValueError) as error:
            await self._refuse(latest, str(error))
            log.error(
                "refused model version %s: %s; still serving %s",
                latest,
                error,
                self.current.version if self.current else "nothing (fail open)",
            )
            return self.current
        except Exception as error:  # a bug the version triggers: refuse it, keep watching
            await self._refuse(latest, f"{type(error).__name__}: {error}")
            log.exception(
                "refused model version %s: loading it raised %s; still serving %s",
                latest,
                type(error).__name__,
                self.current.version if self.current else "nothing (fail open)",
            )
            return self.current
        if self._retries.pop(latest, None) is not None:
            log.info("fetched model version %s after %d failed tries", latest, failed_before)
        generation = (self.current.generation if self.current else 0) + 1
        self.current = LoadedVersion(latest, path, generation, model.partners)
        self.successes += 1
        log.info("model version %s verified (generation %d)", latest, generation)
        self.on_version(self.current)
        return self.current

    async def restore(self, *, check_files: bool = False) -> bool:
        """Fetch the current version again if its cached copy is gone (or, with ``check_files``,
        no longer matches its manifest); the workers that lack it are then told to load it.

        Returns whether a copy was fetched. A worker started with a missing path would fail
        open until the next version is published; this is what prevents it.
        """
        current = self.current
        if current is None or await asyncio.to_thread(_intact, current.path, check_files):
            return False
        try:
            path = await asyncio.to_thread(self.store.fetch, current.version, self.cache_dir)
        except (StoreError, ArtifactError, OSError) as error:
            self.store_failures += 1
            log.log(
                logging.DEBUG if self._restore_failed else logging.WARNING,
                "model version %s is missing from the cache %s and could not be fetched again: "
                "%s (will retry every poll)",
                current.version,
                current.path,
                error,
            )
            self._restore_failed = True
            return False
        self._restore_failed = False
        self.restores += 1
        log.warning(
            "model version %s was missing from the cache; fetched it again into %s",
            current.version,
            path,
        )
        self.current = replace(current, path=path)
        self.on_version(self.current)
        return True

    async def run(self) -> None:
        while True:
            try:
                await self.check()
                await self.restore()
            except Exception:  # one poll's bug must not end the polling (and every reload)
                self.errors += 1
                log.exception("model watcher: the look at %s failed; polling on", self.store.uri)
            await asyncio.sleep(
                self.poll_s if self.current else min(self.poll_s, _RETRY_WITHOUT_MODEL_S)
            )

    def _retry_later(
        self, version: str, failed_before: int, error: Exception, *, backoff: bool
    ) -> None:
        failures = failed_before + 1
        delay_s = min(max(self.poll_s, 1.0) * 2 ** (failures - 1), _MAX_BACKOFF_S)
        self._retries[version] = (failures, time.monotonic() + delay_s if backoff else 0.0)
        self.store_failures += 1
        # Once per version: a full disk would otherwise repeat the same line every poll.
        level = logging.WARNING if failures == 1 else logging.DEBUG
        log.log(
            level,
            "could not fetch model version %s into %s: %s; %s",
            version,
            self.cache_dir,
            error,
            f"retrying with backoff (next in {delay_s:.0f} s)" if backoff else "retrying each poll",
        )

    async def _refuse(self, version: str, reason: str) -> None:
        self.failures += 1
        self.refused[version] = reason
        self._retries.pop(version, None)
        # Never served: its cached copy (a verified one, if loading is what failed) only takes
        # disk space. Versions are immutable, so it will not be fetched again.
        await asyncio.to_thread(shutil.rmtree, self.cache_dir / version, True)


def _intact(path: Path, check_files: bool) -> bool:
    if not check_files:
        return (path / MANIFEST_NAME).is_file()
    try:
        verify(path)
    except ArtifactError:
        return False
    return True
