"""End-to-end tests of the network sources (`mptrj`, `mp-api`) against an HTTP server on 127.0.0.1.

The server serves small files in the real formats, built here from real MP data in
../shared/data: an MPtrj-shaped JSON (real VASP frames: forces, kBar stress) and mp-api-shaped
heartbeat / materials/summary answers (real MP-20 structures). It supports Range requests,
can cut a response short and can answer 429/5xx a set number of times.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import threading
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from ase.units import GPa

from xtalbench.core.schema import Rejected, frames_table, validate_frame
from xtalbench.fetch.sources import download as dl
from xtalbench.fetch.sources import mp_api, mptrj

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TASK_FRAMES = DATA / "mp-task-frames" / "mp_task_frames.extxyz.gz"
MP20 = DATA / "mp20-subset" / "mp20_subset.parquet"
FAKE_KEY = "XTALBENCHfakeKEY0123456789abcdef"  # 32 characters, like a real MP key
NO_WAIT = {"max_retries": 3, "backoff": 0.0, "timeout": 10}

pytestmark = pytest.mark.skipif(not (TASK_FRAMES.exists() and MP20.exists()), reason="../shared/data not present")


# --- the local HTTP server ------------------------------------------------------------------


class FakeServer:
    """Files with Range support, JSON routes, and scripted failures, recorded per request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.routes: dict[str, Callable[[dict[str, list[str]]], Any]] = {}
        self.fail: dict[str, list[int]] = defaultdict(list)  # path → statuses of the next answers (200: serve)
        self.cut: dict[str, list[int]] = defaultdict(list)  # path → close after N body bytes
        self.requests: list[dict[str, Any]] = []
        self.ignore_range = False  # behave like a server without Range support
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                server.requests.append({"path": url.path, "headers": dict(self.headers), "query": query})
                status = server.fail[url.path].pop(0) if server.fail[url.path] else 200
                if status != 200:
                    self._send(status, b'{"detail": "try again later"}', {"Retry-After": "0"} if status == 429 else None)
                elif url.path in server.files:
                    self._file(server.files[url.path], server.cut[url.path])
                elif url.path in server.routes:
                    self._send(200, json.dumps(server.routes[url.path](query)).encode())
                else:
                    self._send(404, b'{"detail": "not found"}')

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _file(self, data: bytes, cuts: list[int]) -> None:
                start, status = 0, 200
                rng = None if server.ignore_range else self.headers.get("Range")
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if cuts:  # send part of the body, then drop the connection
                    self.wfile.write(body[: cuts.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def hits(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as srv:
        yield srv


# --- MPtrj-shaped data from real VASP frames --------------------------------------------------

TASKS = ("mp-fgdbb", "mp-fwlmb", "mp-fwugc")  # compressive, tensile, mixed stresses
BAD_STRUCTURE = "mp-fwugc-9-0"  # frame with no structure
BAD_ELEMENT = "mp-fwugc-9-1"  # frame with an unknown element


def _structure_dict(atoms) -> dict:
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice(atoms.cell.array), atoms.get_chemical_symbols(), atoms.positions, coords_are_cartesian=True).as_dict()


@pytest.fixture(scope="module")
def mptrj_data() -> dict[str, Any]:
    """An MPtrj-shaped document from real MP task frames, plus two broken frames."""
    from ase.io import read

    doc: dict[str, dict[str, Any]] = {}
    for atoms in read(TASK_FRAMES, index=":60"):
        info = atoms.info
        if info["task_id"] not in TASKS:
            continue
        frame_id = f"{info['task_id']}-{info['calc_index']}-{info['ionic_step']}"
        n = len(atoms)
        energy = float(info["e_fr_energy"])
        doc.setdefault(info["task_id"], {})[frame_id] = {
            "structure": _structure_dict(atoms),
            "uncorrected_total_energy": energy,
            "corrected_total_energy": energy - 0.1 * n,
            "energy_per_atom": energy / n,
            "ef_per_atom": -0.25,
            "e_per_atom_relaxed": energy / n,
            "ef_per_atom_relaxed": -0.25,
            "force": atoms.arrays["dft_forces"].tolist(),
            "stress": np.asarray(info["dft_stress_kbar"], dtype=float).reshape(3, 3).tolist(),
            "magmom": None,
            "bandgap": 1.5,
            "mp_id": info["task_id"],
        }
    template = next(iter(doc["mp-fwugc"].values()))
    doc["mp-fwugc"][BAD_STRUCTURE] = {**template, "structure": None}
    broken = json.loads(json.dumps(template["structure"]))
    broken["sites"][0]["species"][0]["element"] = "Xx"
    doc["mp-fwugc"][BAD_ELEMENT] = {**template, "structure": broken}
    raw = json.dumps(doc).encode()
    return {"doc": doc, "raw": raw, "md5": hashlib.md5(raw).hexdigest()}


def _mptrj_config(server: FakeServer, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    server.files["/ndownloader/files/41619375"] = data["raw"]
    return {"source": "mptrj", "url": server.url + "/ndownloader/files/41619375", "md5": data["md5"],
            "filename": "MPtrj_test.json", "retry": NO_WAIT, "progress": False, **extra}


def _split(records: list) -> tuple[list[dict], list[Rejected]]:
    return [r for r in records if isinstance(r, dict)], [r for r in records if isinstance(r, Rejected)]


# --- mptrj --------------------------------------------------------------------------------------


def test_mptrj_download_and_parse_converts_units(server, mptrj_data, tmp_path):
    config = _mptrj_config(server, mptrj_data)
    rows, rejected = _split(list(mptrj.read_records(config, tmp_path)))

    doc = mptrj_data["doc"]
    expected_ids = {fid for frames in doc.values() for fid in frames} - {BAD_STRUCTURE, BAD_ELEMENT}
    assert {r["frame_id"] for r in rows} == expected_ids
    assert {(r.record, r.field) for r in rejected} == {(BAD_STRUCTURE, "structure"), (BAD_ELEMENT, "numbers")}
    assert "Xx" in next(r.reason for r in rejected if r.record == BAD_ELEMENT)
    assert (tmp_path / "MPtrj_test.json").read_bytes() == mptrj_data["raw"]

    saw_compressive = False
    for row in rows:
        validate_frame(row)
        record = doc[row["material_id"]][row["frame_id"]]
        assert row["source"] == "mptrj"
        assert row["energy"] == record["uncorrected_total_energy"]
        assert row["formation_energy_per_atom"] == record["ef_per_atom"]
        assert row["band_gap"] == record["bandgap"]
        np.testing.assert_allclose(row["forces"], np.ravel(record["force"]))
        kbar = np.asarray(record["stress"])
        voigt_kbar = [kbar[0, 0], kbar[1, 1], kbar[2, 2], kbar[1, 2], kbar[0, 2], kbar[0, 1]]
        np.testing.assert_allclose(row["stress"], -0.1 * GPa * np.asarray(voigt_kbar), atol=1e-12)
        for s_kbar, s_ase in zip(np.diag(kbar), row["stress"][:3]):
            if s_kbar > 1.0:  # compressive in VASP → negative (compressive) in ASE
                saw_compressive = True
                assert s_ase < 0
            if s_kbar < -1.0:
                assert s_ase > 0
        task, calc, step = row["frame_id"].rsplit("-", 2)
        assert row["trajectory_id"] == f"{task}-{calc}" and row["frame_index"] == int(step)
    assert saw_compressive
    # 50 kBar = 5 GPa = 0.0312 eV/Å³
    big = max(rows, key=lambda r: -min(r["stress"][:3]))
    assert min(big["stress"][:3]) == pytest.approx(-0.1 * GPa * max(np.diag(doc[big["material_id"]][big["frame_id"]]["stress"])))

    # a second run reuses the verified file without a request
    before = len(server.requests)
    assert len(list(mptrj.read_records(config, tmp_path))) == len(rows) + len(rejected)
    assert len(server.requests) == before
    described = mptrj.describe(config)
    assert described["md5"] == mptrj_data["md5"] and described["url"] == config["url"]


def test_mptrj_cut_short_download_is_resumed(server, mptrj_data, tmp_path):
    config = _mptrj_config(server, mptrj_data)
    cut_at = len(mptrj_data["raw"]) // 3
    server.cut["/ndownloader/files/41619375"] = [cut_at]
    path = mptrj.local_file(config, tmp_path)

    hits = server.hits("/ndownloader/files/41619375")
    assert len(hits) == 2
    assert "Range" not in hits[0]["headers"]
    assert hits[1]["headers"]["Range"] == f"bytes={cut_at}-"
    assert dl.md5sum(path) == mptrj_data["md5"]
    assert not (tmp_path / "MPtrj_test.json.part").exists()


def test_download_restarts_when_the_server_ignores_range(server, mptrj_data, tmp_path):
    config = _mptrj_config(server, mptrj_data)
    server.ignore_range = True
    server.cut["/ndownloader/files/41619375"] = [len(mptrj_data["raw"]) // 2]
    path = mptrj.local_file(config, tmp_path)
    hits = server.hits("/ndownloader/files/41619375")
    assert len(hits) == 2 and "Range" in hits[1]["headers"]  # asked to resume, got the whole file (200)
    assert path.read_bytes() == mptrj_data["raw"]


def test_mptrj_bad_md5_is_refused_and_removed(server, mptrj_data, tmp_path):
    wrong = "0" * 32
    config = _mptrj_config(server, mptrj_data, md5=wrong)
    with pytest.raises(dl.ChecksumError) as err:
        list(mptrj.read_records(config, tmp_path))
    message = str(err.value)
    assert wrong in message and mptrj_data["md5"] in message and "MPtrj_test.json" in message
    assert list(tmp_path.iterdir()) == []  # nothing left: the next run starts clean

    # a local file with the wrong md5 is refused too, but never deleted
    local = tmp_path / "mine.json"
    local.write_bytes(mptrj_data["raw"])
    with pytest.raises(dl.ChecksumError, match=wrong):
        mptrj.local_file({"source": "mptrj", "path": str(local), "md5": wrong}, tmp_path)
    assert local.exists()


def test_download_retries_429_and_5xx_then_gives_up(server, mptrj_data, tmp_path):
    config = _mptrj_config(server, mptrj_data)
    server.fail["/ndownloader/files/41619375"] = [429, 503]
    path = mptrj.local_file(config, tmp_path)
    assert dl.md5sum(path) == mptrj_data["md5"]
    assert len(server.hits("/ndownloader/files/41619375")) == 3

    server.fail["/gone"] = [503] * 10
    with pytest.raises(dl.DownloadError, match="HTTP 503"):
        dl.download(server.url + "/gone", tmp_path / "gone.json", "0" * 32, dl.RetryPolicy(max_retries=2, backoff=0.0))
    assert len(server.hits("/gone")) == 3  # first try + 2 retries
    with pytest.raises(dl.DownloadError, match="HTTP 404"):  # not retryable
        dl.download(server.url + "/missing", tmp_path / "m.json", "0" * 32, dl.RetryPolicy(max_retries=2, backoff=0.0))
    assert len(server.hits("/missing")) == 1


def test_mptrj_local_gzip_path_matches_download(server, mptrj_data, tmp_path):
    gz = tmp_path / "local" / "MPtrj.json.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(mptrj_data["raw"]))
    local_rows = list(mptrj.read_records({"source": "mptrj", "path": str(gz), "progress": False}, tmp_path))
    remote_rows = list(mptrj.read_records(_mptrj_config(server, mptrj_data), tmp_path / "dl"))
    assert local_rows == remote_rows and len(local_rows) > 10
    assert mptrj.describe({"source": "mptrj", "path": str(gz)})["md5"] == hashlib.md5(gz.read_bytes()).hexdigest()

    first = list(mptrj.read_records({"source": "mptrj", "path": str(gz), "max_materials": 1, "progress": False}, tmp_path))
    material = next(iter(mptrj_data["doc"]))
    assert {r["material_id"] for r in _split(first)[0]} == {material}
    assert len(first) == len(mptrj_data["doc"][material])  # every frame of it, rejected ones included


class _CountingReader(io.RawIOBase):
    def __init__(self, data: bytes):
        self._buffer, self.read_bytes = io.BytesIO(data), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._buffer.readinto(b)
        self.read_bytes += n
        return n


def test_mptrj_parse_streams_without_loading_the_whole_file(mptrj_data, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("json.load(s) must not be used on MPtrj")

    monkeypatch.setattr(json, "load", forbidden)
    monkeypatch.setattr(json, "loads", forbidden)
    reader = _CountingReader(mptrj_data["raw"])
    rows = mptrj.iter_mptrj(reader, progress=False, buf_size=1024)
    first = next(rows)
    assert isinstance(first, dict) and first["material_id"] == next(iter(mptrj_data["doc"]))
    assert reader.read_bytes < len(mptrj_data["raw"]) / 3  # yielded long before the end of the file
    rest = list(rows)
    assert reader.read_bytes == len(mptrj_data["raw"]) and len(rest) > 10


def test_mptrj_truncated_file_names_the_file(tmp_path):
    bad = tmp_path / "cut.json"
    bad.write_bytes(b'{"mp-1": {"mp-1-0-0": {"structure": ')
    with pytest.raises(mptrj.MPtrjError, match="cut.json"):
        list(mptrj.read_records({"source": "mptrj", "path": str(bad), "progress": False}, tmp_path))


# --- mp-api ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def summary_docs() -> list[dict[str, Any]]:
    """materials/summary documents (as the API serves them) for 7 real MP-20 structures + 2 broken."""
    import pyarrow.parquet as pq
    from pymatgen.core import Structure

    table = pq.read_table(MP20).slice(0, 7).to_pylist()
    docs = []
    for rec in table:
        structure = Structure.from_str(rec["cif"], fmt="cif")
        docs.append({
            "material_id": rec["material_id"],
            "structure": structure.as_dict(),
            "nsites": len(structure),
            "elements": sorted({el.symbol for el in structure.composition}),
            "formula_pretty": rec["pretty_formula"],
            "formation_energy_per_atom": rec["formation_energy_per_atom"],
            "energy_above_hull": rec["e_above_hull"],
            "band_gap": rec["band_gap"],
            "symmetry": {"number": rec["spacegroup.number"], "crystal_system": "Cubic", "symbol": "P1", "version": "2.6.0"},
            "deprecated": False,
            "builder_meta": {"emmet_version": "0.87.3", "license": "BY-C"},
        })
    broken = json.loads(json.dumps(docs[0]))
    broken["structure"]["sites"][0]["species"][0]["element"] = "Xx"
    docs.append({**broken, "material_id": "mp-bad-element"})
    docs.append({**docs[1], "material_id": "mp-no-structure", "structure": None})
    return docs


def _serve_mp_api(server: FakeServer, docs: list[dict[str, Any]], db_version: str = "2025.09.25") -> None:
    def heartbeat(query):
        return {"db_version": db_version, "access_controlled_batch_ids": [], "version": "0.87.3"}

    def summary(query):
        page, per_page = int(query["_page"][0]), int(query["_per_page"][0])
        fields = query["_fields"][0].split(",")
        chunk = docs[(page - 1) * per_page: page * per_page]
        return {"data": [{k: d[k] for k in fields if k in d} for d in chunk], "meta": {"total_doc": len(docs)}}

    server.routes["/heartbeat"] = heartbeat
    server.routes["/materials/summary/"] = summary


def _mp_config(server: FakeServer, **extra: Any) -> dict[str, Any]:
    return {"source": "mp-api", "endpoint": server.url + "/", "chunk_size": 3, "retry": NO_WAIT, "progress": False,
            "query": {"elements": ["O"], "num_sites": [1, 20], "energy_above_hull": [0, 0.08]}, **extra}


def test_mp_api_pages_query_and_retries_429(server, summary_docs, tmp_path, monkeypatch):
    monkeypatch.setenv("MP_API_KEY", FAKE_KEY)
    _serve_mp_api(server, summary_docs)
    server.fail["/materials/summary/"] = [429, 502, 500]  # 500: not retried by mp-api's own session
    # ours (retried by the session), then mp-api's own heartbeat reads (no retries of their own)
    server.fail["/heartbeat"] = [503, 200, 429]
    config = _mp_config(server)
    rows, rejected = _split(list(mp_api.read_records(config, tmp_path)))

    good = summary_docs[:7]
    assert [r["frame_id"] for r in rows] == [d["material_id"] for d in good]
    assert {(r.record, r.field) for r in rejected} == {("mp-bad-element", "numbers"), ("mp-no-structure", "structure")}
    for row, doc in zip(rows, good):
        validate_frame(row)
        assert row["material_id"] == doc["material_id"] and row["source"] == "mp-api"
        assert row["e_above_hull"] == doc["energy_above_hull"]
        assert row["formation_energy_per_atom"] == doc["formation_energy_per_atom"]
        assert row["band_gap"] == doc["band_gap"]
        assert row["spacegroup"] == doc["symmetry"]["number"]
        assert row["nsites"] == doc["nsites"] and row["energy"] is None
        np.testing.assert_allclose(np.reshape(row["positions"], (-1, 3))[0], doc["structure"]["sites"][0]["xyz"])

    hits = server.hits("/materials/summary/")
    assert len(hits) == 3 + 4  # 3 refusals of page 1, then 9 documents in pages of 3 and an empty 4th page
    ok = hits[3:]
    assert [h["query"]["_page"] for h in hits] == [["1"]] * 4 + [["2"], ["3"], ["4"]]
    q = ok[0]["query"]
    assert q["elements"] == ["O"] and q["nsites_min"] == ["1"] and q["nsites_max"] == ["20"]
    assert q["energy_above_hull_max"] == ["0.08"] and q["_per_page"] == ["3"] and q["_sort_fields"] == ["material_id"]
    assert set(q["_fields"][0].split(",")) >= {"material_id", "structure", "energy_above_hull", "symmetry"}
    assert all(h["headers"].get("x-api-key") == FAKE_KEY for h in hits)

    statuses_left = server.fail["/heartbeat"]
    assert statuses_left == [] and len(server.hits("/heartbeat")) >= 4  # the 429 was retried too
    described = mp_api.describe(config)
    assert described["db_version"] == "2025.09.25"
    assert described["query"]["num_sites"] == [1, 20] and described["endpoint"] == server.url + "/"


def test_mp_api_limit_and_retry_exhaustion(server, summary_docs, tmp_path, monkeypatch):
    monkeypatch.setenv("MP_API_KEY", FAKE_KEY)
    _serve_mp_api(server, summary_docs)
    records = list(mp_api.read_records(_mp_config(server, limit=4), tmp_path))
    assert [r["material_id"] for r in records] == [d["material_id"] for d in summary_docs[:4]]
    assert [h["query"]["_page"] for h in server.hits("/materials/summary/")] == [["1"], ["2"]]

    server.fail["/materials/summary/"] = [503] * 20
    with pytest.raises(mp_api.MPApiError, match="page 1"):
        list(mp_api.read_records(_mp_config(server, retry={"max_retries": 2, "backoff": 0.0}), tmp_path))


def test_mp_api_key_required_and_never_leaks(server, summary_docs, tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(mp_api.MPApiError, match="MP_API_KEY is not set"):
        next(mp_api.read_records(_mp_config(server), tmp_path))
    monkeypatch.setenv("MP_API_KEY", FAKE_KEY[:-1])
    with pytest.raises(mp_api.MPApiError) as short:
        next(mp_api.read_records(_mp_config(server), tmp_path))
    assert FAKE_KEY[:-1] not in str(short.value)

    monkeypatch.setenv("MP_API_KEY", FAKE_KEY)
    caplog.set_level(logging.DEBUG)
    _serve_mp_api(server, summary_docs)
    config = _mp_config(server)
    records = list(mp_api.read_records(config, tmp_path))
    rows, rejected = _split(records)
    described = mp_api.describe(config)

    server.fail["/materials/summary/"] = [500] * 20  # an error path: the key must not be in the error
    with pytest.raises(Exception) as failed:
        list(mp_api.read_records(_mp_config(server, retry={"max_retries": 1, "backoff": 0.0}), tmp_path))
    error_text = "".join(traceback.format_exception(failed.value))

    from xtalbench.core.project import write_json, write_parquet
    from xtalbench.core.schema import quarantine_table

    write_parquet(frames_table(rows), tmp_path / "frames.parquet")
    write_parquet(quarantine_table(rejected), tmp_path / "quarantine.parquet")
    write_json(described, tmp_path / "DATA_VERSION.json")
    captured = capfd.readouterr()

    assert all(h["headers"].get("x-api-key") == FAKE_KEY for h in server.hits("/materials/summary/"))  # it was used
    assert rows and rejected
    assert FAKE_KEY not in error_text
    assert FAKE_KEY not in caplog.text and FAKE_KEY not in captured.out + captured.err
    assert FAKE_KEY not in json.dumps(described) and FAKE_KEY not in repr(records)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_scrub_blanks_a_key_that_an_error_carries():
    try:
        try:
            raise ValueError(f"bad header x-api-key: {FAKE_KEY}")
        except ValueError as inner:
            raise RuntimeError("request failed") from inner
    except RuntimeError as err:
        scrubbed = mp_api._scrub(err, FAKE_KEY)
    assert isinstance(scrubbed, mp_api.MPApiError) and FAKE_KEY not in str(scrubbed)
    assert scrubbed.__cause__ is None and scrubbed.__context__ is None
    plain = RuntimeError("no key here")
    assert mp_api._scrub(plain, FAKE_KEY) is plain


def test_mp_api_doc_energy_only_from_requested_uncorrected_energy(summary_docs):
    doc = summary_docs[0]
    assert mp_api.frame_from_doc(doc)["energy"] is None
    row = mp_api.frame_from_doc({**doc, "uncorrected_energy_per_atom": -5.5})
    assert row["energy"] == pytest.approx(-5.5 * doc["nsites"])
    missing = mp_api.frame_from_doc({k: v for k, v in doc.items() if k != "material_id"}, "page 2 document 7")
    assert isinstance(missing, Rejected) and (missing.record, missing.field) == ("page 2 document 7", "material_id")
