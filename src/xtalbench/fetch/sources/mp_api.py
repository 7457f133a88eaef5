"""Source `mp-api`: a live, pinned query of the Materials Project summary endpoint.

Talks to `materials/summary/` through `mp_api.client.MPRester`, page by page (`_page`,
`_per_page`, sorted), so only one page of documents is in memory. The API key comes from the
`MP_API_KEY` environment variable only and never reaches a log, an error or an artifact.
429 and 5xx answers (and dropped connections) are retried with exponential backoff by the
HTTP session handed to MPRester. The MP database version (`heartbeat`) goes into `describe`.

params (`datasets.<name>`):
  query: keyword arguments of `MPRester.materials.summary.search`, e.g. elements: [Li, O],
    exclude_elements: [...], num_sites: [1, 20], energy_above_hull: [0, 0.05], deprecated: false
  fields: summary fields to fetch (material_id and structure are always added); default
    DEFAULT_FIELDS. Adding `uncorrected_energy_per_atom` sets `energy` (eV, × nsites): the
    summary mixes GGA, GGA+U and r2SCAN, so it is off by default.
  chunk_size: documents per request (≤ 1000, the API's page limit); limit: max documents
  sort: sort field for stable pages (default material_id); endpoint: API URL (default
    $MP_API_ENDPOINT or https://api.materialsproject.org/); retry: max_retries, backoff,
    max_backoff, timeout; progress: show a progress bar (default true)
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from xtalbench.core.schema import FrameError, Rejected, make_frame
from xtalbench.fetch.sources.download import RETRY_STATUS, RetryPolicy
from xtalbench.fetch.sources.local import SourceError
from xtalbench.fetch.sources.mptrj import structure_arrays

log = logging.getLogger(__name__)

SOURCE = "mp-api"
DEFAULT_ENDPOINT = "https://api.materialsproject.org/"
DEFAULT_FIELDS = ("material_id", "structure", "formation_energy_per_atom", "energy_above_hull", "band_gap", "symmetry")
REQUIRED_FIELDS = ("material_id", "structure")
MAX_PAGE = 1000  # the API refuses larger pages
KEY_LENGTH = 32
CONFIG_KEYS = {"source", "query", "fields", "chunk_size", "limit", "sort", "endpoint", "retry", "progress"}

_DB_VERSIONS: dict[str, str] = {}  # endpoint → db_version seen by the last read_records


class MPApiError(SourceError):
    """The Materials Project API could not be queried (never contains the API key)."""


@dataclass(frozen=True)
class Query:
    """The pinned query, read from params."""

    endpoint: str
    query: dict[str, Any] = field(default_factory=dict)
    fields: tuple[str, ...] = DEFAULT_FIELDS
    chunk_size: int = MAX_PAGE
    limit: int | None = None
    sort: str | None = "material_id"
    retry: RetryPolicy = RetryPolicy()
    progress: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Query:
        unknown = set(config) - CONFIG_KEYS
        if unknown:  # a warning, not an error: the fetch command may add keys of its own
            log.warning("mp-api source ignores params %s (it reads: %s)", sorted(unknown), sorted(CONFIG_KEYS))
        endpoint = config.get("endpoint") or os.environ.get("MP_API_ENDPOINT") or DEFAULT_ENDPOINT
        if not endpoint.endswith("/"):
            endpoint += "/"
        fields = tuple(config.get("fields") or DEFAULT_FIELDS)
        fields = tuple(dict.fromkeys((*REQUIRED_FIELDS, *fields)))
        chunk_size = int(config.get("chunk_size") or MAX_PAGE)
        if not 1 <= chunk_size <= MAX_PAGE:
            raise ValueError(f"mp-api source: chunk_size must be between 1 and {MAX_PAGE}, got {chunk_size}")
        query = {k: tuple(v) if isinstance(v, list) and k not in _LIST_ARGS else v for k, v in (config.get("query") or {}).items()}
        return cls(
            endpoint=endpoint,
            query=query,
            fields=fields,
            chunk_size=chunk_size,
            limit=None if config.get("limit") is None else int(config["limit"]),
            sort=config.get("sort", "material_id"),
            retry=RetryPolicy.from_config(config.get("retry")),
            progress=bool(config.get("progress", True)),
        )


# search() arguments that are lists of values, not [min, max] ranges
_LIST_ARGS = {"elements", "exclude_elements", "material_ids", "formula", "chemsys", "possible_species", "has_props",
              "spacegroup_number", "spacegroup_symbol", "crystal_system"}


def read_records(config: dict, workdir: Path) -> Iterator[dict | Rejected]:
    """Yield one frame row per summary document matching the pinned query."""
    query = Query.from_config(config)
    key = api_key()
    try:
        yield from _read(query, key)
        return
    except Exception as err:
        scrubbed = _scrub(err, key)
        if scrubbed is err:
            raise
    raise scrubbed  # outside the except block: the original (holding the key) is not chained


def describe(config: dict) -> dict:
    """The pinned query, endpoint, MP database version and client versions (never the key)."""
    query = Query.from_config(config)
    db_version = _DB_VERSIONS.get(query.endpoint)
    if db_version is None:
        with _session(None, query.retry) as session:
            db_version = heartbeat(session, query.endpoint, query.retry)["db_version"]
    return {
        "source": SOURCE,
        "endpoint": query.endpoint,
        "route": "materials/summary/",
        "query": {k: list(v) if isinstance(v, tuple) else v for k, v in query.query.items()},
        "fields": list(query.fields),
        "sort": query.sort,
        "chunk_size": query.chunk_size,
        "limit": query.limit,
        "db_version": db_version,
        "mp_api_version": version("mp-api"),
        "emmet_core_version": version("emmet-core"),
    }


def api_key() -> str:
    """The key from MP_API_KEY; errors say what is wrong without ever showing the value."""
    key = os.environ.get("MP_API_KEY", "").strip()
    if not key:
        raise MPApiError(
            "MP_API_KEY is not set: the mp-api source needs a Materials Project API key "
            "(https://materialsproject.org/api) in the MP_API_KEY environment variable"
        )
    if len(key) != KEY_LENGTH:
        raise MPApiError(f"MP_API_KEY has {len(key)} characters; Materials Project API keys have {KEY_LENGTH}")
    return key


def heartbeat(session: requests.Session, endpoint: str, policy: RetryPolicy) -> dict[str, Any]:
    """GET <endpoint>heartbeat through the retrying session: db_version, server version."""
    url = endpoint + "heartbeat"
    try:
        response = session.get(url, timeout=policy.timeout)
    except requests.RequestException as err:
        raise MPApiError(f"{url}: no answer after {policy.max_retries} retries ({type(err).__name__})") from err
    if response.status_code != 200:
        raise MPApiError(f"{url}: HTTP {response.status_code}")
    try:
        body = response.json()
        body["db_version"]
    except (ValueError, KeyError, TypeError) as err:
        raise MPApiError(f"{url}: not a Materials Project heartbeat (no db_version)") from err
    return body


def _session(key: str | None, policy: RetryPolicy) -> requests.Session:
    """A session that retries 429/5xx and connection errors with exponential backoff."""
    session = requests.Session()
    if key is not None:
        session.headers["x-api-key"] = key
    retry = Retry(
        total=policy.max_retries,
        connect=policy.max_retries,
        read=policy.max_retries,
        status=policy.max_retries,
        status_forcelist=sorted(RETRY_STATUS),
        allowed_methods=frozenset({"GET", "HEAD"}),
        backoff_factor=policy.backoff,
        backoff_max=policy.max_backoff,
        respect_retry_after_header=True,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _connect(key: str, query: Query, session: requests.Session):
    """MPRester on our session. Its constructor reads `heartbeat` without retries, so retry it here."""
    from mp_api.client import MPRester
    from mp_api.client.core import MPRestError

    for attempt in range(1, query.retry.max_retries + 2):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # version-compatibility chatter
                return MPRester(api_key=key, endpoint=query.endpoint, session=session, use_document_model=False,
                                mute_progress_bars=True)
        except (MPRestError, requests.RequestException, ValueError, KeyError) as err:
            if attempt > query.retry.max_retries:
                raise MPApiError(f"{query.endpoint}: could not connect ({type(err).__name__})") from err
            time.sleep(query.retry.delay(attempt))
    raise AssertionError("unreachable")


def _read(query: Query, key: str) -> Iterator[dict | Rejected]:
    from tqdm.auto import tqdm

    with _session(key, query.retry) as session:
        db_version = heartbeat(session, query.endpoint, query.retry)["db_version"]
        _DB_VERSIONS[query.endpoint] = db_version
        log.info("mp-api: %s, database version %s", query.endpoint, db_version)
        rester = _connect(key, query, session)
        summary = rester.materials.summary
        bar = tqdm(desc="mp-api summary", unit=" docs", total=query.limit, disable=not query.progress)
        seen, page = 0, 1
        try:
            while query.limit is None or seen < query.limit:
                docs = _page(summary, query, page)
                for doc in docs:
                    yield frame_from_doc(doc, f"page {page} document {seen}")
                    seen += 1
                    bar.update()
                    if query.limit is not None and seen >= query.limit:
                        return
                if len(docs) < query.chunk_size:
                    return
                page += 1
        finally:
            bar.close()


def _page(summary, query: Query, page: int) -> list[dict]:
    from mp_api.client.core import MPRestError

    extra = {"_sort_fields": query.sort} if query.sort else {}
    try:
        return list(summary.search(**query.query, fields=list(query.fields), all_fields=False,
                                   chunk_size=query.chunk_size, _page=page, **extra))
    except MPRestError as err:
        raise MPApiError(f"materials/summary page {page}: {err}") from err


def frame_from_doc(doc: Mapping[str, Any], where: str = "?") -> dict | Rejected:
    """One summary document → frame row, or Rejected naming the material and the field."""
    material_id = doc.get("material_id")
    if not material_id:
        return Rejected(where, "material_id", "missing", _raw(doc))
    material_id = str(material_id)
    try:
        lattice, numbers, positions, pbc = structure_arrays(doc.get("structure"), material_id)
        energy = doc.get("uncorrected_energy_per_atom")
        return make_frame(
            frame_id=material_id,
            material_id=material_id,
            source=SOURCE,
            lattice=lattice,
            numbers=numbers,
            positions=positions,
            pbc=pbc,
            energy=None if energy is None else float(energy) * len(numbers),
            formation_energy_per_atom=doc.get("formation_energy_per_atom"),
            e_above_hull=doc.get("energy_above_hull"),
            band_gap=doc.get("band_gap"),
            spacegroup=(doc.get("symmetry") or {}).get("number"),
        )
    except FrameError as err:
        return Rejected.from_error(err, _raw(doc))


def _raw(doc: Mapping[str, Any]) -> dict:
    return dict(doc)


def _scrub(err: BaseException, key: str) -> BaseException:
    """`err` itself, or an MPApiError with the key blanked out if any message in its chain holds it."""
    chain, seen = [], set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    if not any(key in str(e) or key in repr(e.args) for e in chain):
        return err
    return MPApiError(f"{type(err).__name__}: {str(err).replace(key, '***')}")
