"""Resumable, md5-checked HTTP download with retries.

A download goes to `<dest>.part`; a connection cut short is resumed with an HTTP `Range`
request from the bytes already on disk. Connection errors, 429 and 5xx answers are retried
with exponential backoff (attempts that made progress do not count against the limit). The
file becomes `<dest>` only once its md5 matches; on a mismatch the bad bytes are deleted, so
the next run starts clean, and the error names the file, the expected and the actual md5.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from xtalbench.fetch.sources.local import SourceError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
CHUNK_BYTES = 1 << 20


class DownloadError(SourceError):
    """A download that failed for good (after retries, or on a non-retryable answer)."""


class ChecksumError(DownloadError):
    """The downloaded (or local) file does not have the pinned md5."""

    def __init__(self, path: Path, expected: str, actual: str, removed: bool):
        self.path, self.expected, self.actual = path, expected, actual
        fate = "; the file was deleted so the next run downloads it again" if removed else ""
        super().__init__(f"{path}: md5 mismatch: expected {expected}, got {actual}{fate}")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; `backoff` 0 disables sleeping (tests)."""

    max_retries: int = 5
    backoff: float = 1.0  # seconds before the first retry; doubles on each one
    max_backoff: float = 60.0
    timeout: float = 60.0  # seconds without data before a read is abandoned

    @classmethod
    def from_config(cls, config: dict | None) -> RetryPolicy:
        config = dict(config or {})
        unknown = set(config) - {"max_retries", "backoff", "max_backoff", "timeout"}
        if unknown:
            raise ValueError(f"retry: unknown keys {sorted(unknown)} (allowed: max_retries, backoff, max_backoff, timeout)")
        return cls(**config)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based); honours a numeric Retry-After."""
        wait = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        if retry_after and retry_after.strip().isdigit():
            wait = max(wait, min(float(retry_after), self.max_backoff))
        return wait


def md5sum(path: Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str | None, remove_bad: bool = False) -> str:
    """md5 of `path`; raise ChecksumError (deleting the file if asked) when it is not `expected`."""
    actual = md5sum(path)
    if expected and actual != expected.lower():
        if remove_bad:
            path.unlink(missing_ok=True)
        raise ChecksumError(path, expected.lower(), actual, removed=remove_bad)
    return actual


def download(
    url: str,
    dest: str | Path,
    md5: str | None,
    policy: RetryPolicy = RetryPolicy(),
    session: requests.Session | None = None,
    progress: bool = True,
) -> Path:
    """Fetch `url` into `dest` (resuming `<dest>.part`), verify its md5, return `dest`.

    An existing `dest` with the right md5 is reused without a request.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if md5 is None or md5sum(dest) == md5.lower():
            log.info("%s: already downloaded%s", dest, ", md5 ok" if md5 else "")
            return dest
        log.warning("%s: exists but its md5 is not the pinned one; downloading again", dest)
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    session = session or requests.Session()
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        try:
            done, progressed = _fetch_once(url, part, offset, policy, session, progress, tqdm)
        except _Retryable as err:
            done, progressed, reason, retry_after = False, err.progressed, str(err), err.retry_after
        else:
            reason, retry_after = "response ended before the whole file arrived", None
        if done:
            break
        failures = 0 if progressed else failures + 1
        if failures > policy.max_retries:
            raise DownloadError(f"{url}: giving up after {policy.max_retries} retries without progress: {reason}")
        wait = policy.delay(max(failures, 1), retry_after)
        log.warning("%s: %s; retrying in %.1f s (resuming at byte %d)", url, reason, wait, _size(part))
        time.sleep(wait)
    verify_md5(part, md5, remove_bad=True)
    part.replace(dest)
    return dest


class _Retryable(Exception):
    def __init__(self, reason: str, progressed: bool = False, retry_after: str | None = None):
        super().__init__(reason)
        self.progressed, self.retry_after = progressed, retry_after


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _fetch_once(url, part: Path, offset: int, policy: RetryPolicy, session, progress: bool, tqdm) -> tuple[bool, bool]:
    """One GET from `offset`; returns (file complete, bytes were added). Raises _Retryable."""
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = session.get(url, headers=headers, stream=True, timeout=policy.timeout)
    except requests.RequestException as err:
        raise _Retryable(f"connection failed ({type(err).__name__})") from err
    with response:
        status = response.status_code
        if status == 416 and offset:  # nothing left past our bytes: the .part is whole (md5 decides)
            return True, False
        if status in RETRY_STATUS:
            raise _Retryable(f"HTTP {status}", retry_after=response.headers.get("Retry-After"))
        if status not in (200, 206):
            raise DownloadError(f"{url}: HTTP {status} {response.reason}")
        if status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                raise DownloadError(f"{url}: asked for bytes from {offset}, server sent a range from {start}")
        else:  # 200: the server ignored the Range header (or there was none): start over
            offset = 0
        length = response.headers.get("Content-Length")
        expected_end = offset + int(length) if length is not None else None
        written = 0
        mode = "ab" if offset else "wb"
        bar = tqdm(
            total=expected_end, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, mininterval=1.0,
        )
        try:
            with open(part, mode) as handle:
                # raw bytes, never content-decoded: ranges and the md5 refer to the file as served
                for chunk in response.raw.stream(CHUNK_BYTES, decode_content=False):
                    handle.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
            raise _Retryable(f"connection dropped after {written} bytes ({type(err).__name__})", progressed=written > 0) from err
        finally:
            bar.close()
        complete = expected_end is None or offset + written >= expected_end
        return complete, written > 0


def _content_range_start(header: str | None) -> int | None:
    # "bytes 100-199/200"
    if not header or not header.startswith("bytes "):
        return None
    try:
        return int(header[6:].split("-", 1)[0])
    except ValueError:
        return None
