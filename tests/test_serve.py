"""`hybridrec serve`: the real server, started as a subprocess on a loopback port and called over HTTP.

Every answer is checked against the library's own answer for the model version the server says it used; errors
(401, 404, 422) and a model swap under load (zero failed requests, answers switching to the new model) too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import fit_demo

from hybridrec.artifacts import point_link
from hybridrec.recommender import HybridRecommender

TOKEN = "test-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START_TIMEOUT = 180  # loading torch and the text model on a busy machine
NEW_ITEMS = [
    {
        "item_id": "NEW-1",
        "title": "S-Video cable 10 ft, gold plated",
        "category": "Video Cables & Adapters",
        "price": 9,
    },
    {"item_id": "NEW-2", "title": "Rugged power bank 20000mAh with USB-C", "price": None},
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe() -> str:
    exe = shutil.which("hybridrec", path=str(Path(sys.executable).parent)) or shutil.which("hybridrec")
    assert exe, "the hybridrec console script is not installed"
    return exe


class Server:
    """A `hybridrec serve` subprocess and what the tests need to check its answers."""

    def __init__(self, link: Path, port: int, log: Path, proc: subprocess.Popen, cache: Path):
        self.link, self.port, self.log, self.proc, self.cache = link, port, log, proc, cache
        self.url = f"http://127.0.0.1:{port}"
        self._recs: dict[str, HybridRecommender] = {}

    def client(self, auth: bool = True) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTH if auth else {}, timeout=60)

    def rec(self, model_path: str | None = None) -> HybridRecommender:
        """The library's recommender for a served version folder (the one served now when None)."""
        if model_path is None:
            with self.client() as c:
                model_path = c.get("/version").json()["model_path"]
        if model_path not in self._recs:
            self._recs[model_path] = HybridRecommender.load(model_path)
        return self._recs[model_path]

    def rec_of(self, version: str) -> HybridRecommender:
        """The recommender of a version folder named in an answer's `model` field."""
        return self.rec(str(self.link.resolve().parent / version))


def _start(link: Path, log: Path, cache: Path, *extra: str) -> Server:
    port = _free_port()
    # the token from the environment; queries' text cache in the session's tmp folder, never the checkout's
    env = os.environ | {"HYBRIDREC_TOKEN": TOKEN, "HYBRIDREC_CACHE_DIR": str(cache)}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [_exe(), "serve", "--model", str(link), "--port", str(port), "--reload-interval", "0.5", *extra],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
        )
    server = Server(link, port, log, proc, cache)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hybridrec serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    _stop(proc)
    raise AssertionError(f"hybridrec serve did not answer /health in {START_TIMEOUT} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(demo_model, tmp_path_factory):
    """The demo model copied to `models/demo` with `models/latest` pointing at it, served through `latest`."""
    root = tmp_path_factory.mktemp("serve")
    models = root / "models"
    models.mkdir()
    demo_model.load().save(models / "demo")
    point_link(models / "latest", models / "demo")
    srv = _start(models / "latest", root / "server.log", root / "server-text-cache")
    try:
        yield srv
    finally:
        _stop(srv.proc)


def _ranked(answer: dict) -> tuple[list[str], np.ndarray]:
    return [r["item_id"] for r in answer["results"]], np.array([r["score"] for r in answer["results"]])


def _shown(rec: HybridRecommender, answer: tuple[list[str], np.ndarray]) -> tuple[list[str], np.ndarray]:
    """A recommend answer as the service (and `hybridrec recommend`) shows it: ratings clipped to the range."""
    return answer[0], rec.clip_ratings(answer[1])


def _same(answer: dict, expected: tuple[list[str], np.ndarray], atol: float = 1e-5) -> None:
    ids, scores = _ranked(answer)
    assert ids == list(expected[0])
    assert np.allclose(scores, np.asarray(expected[1], dtype=np.float64), atol=atol)
    assert [r["rank"] for r in answer["results"]] == list(range(1, len(ids) + 1))


# ------------------------------------------------------------------------------------------------ answers
def test_health_needs_no_token_and_names_the_served_version(server):
    with server.client(auth=False) as c:
        health = c.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["reload_error"] is None
    assert body["model"] == server.link.resolve().name


def test_version_describes_the_served_model(server):
    with server.client() as c:
        body = c.get("/version").json()
    rec = server.rec(body["model_path"])
    assert Path(body["model_path"]) == server.link.resolve()
    assert body["model"] == server.link.resolve().name
    assert (body["items"], body["users"]) == (len(rec.items_), len(rec.users_)) == (218, 400)
    assert body["name"] == "demo" and body["feedback"] == "explicit" and body["variant"] == "hybrid"
    import hybridrec

    assert body["hybridrec"] == hybridrec.__version__


@pytest.mark.parametrize("query", ["D0031", "D0150", "S-Video cable", "waterproof hiking boots for winter"])
def test_similar_equals_the_library(server, query):
    with server.client() as c:
        answer = c.get("/similar", params={"q": query, "k": 7}).json()
    rec = server.rec_of(answer["model"])
    match = rec.similar_to_text(query, 7)
    assert (answer["resolved_id"], answer["match"]) == (match.resolved_id, match.how)
    # text is encoded in the server's process: the same model, maybe another thread count, so a float tolerance
    _same(answer, (match.ids, match.scores), atol=1e-4)
    if match.how == "id":
        ids, scores = rec.similar_items(query, 7)
        _same(answer, (ids, scores))
    first = answer["results"][0]
    info = rec.item_info(first["item_id"])
    assert (first["title"], first["category"]) == (info["title"], info["category"])


def test_similar_defaults_to_ten(server):
    with server.client() as c:
        answer = c.get("/similar", params={"q": "D0002"}).json()
    _same(answer, server.rec_of(answer["model"]).similar_items("D0002", 10))


def test_recommend_known_user_get_and_post_equal_the_library(server):
    with server.client() as c:
        got = c.get("/recommend", params={"user_id": "U0001", "k": 5}).json()
        posted = c.post("/recommend", json={"user_id": "U0001", "k": 5}).json()
        with_seen = c.post("/recommend", json={"user_id": "U0007", "k": 8, "exclude_seen": False}).json()
    rec = server.rec_of(got["model"])
    _same(got, _shown(rec, rec.recommend("U0001", 5)))
    assert posted == got and got["known_user"] is True and got["user_id"] == "U0001" and got["kind"] == "known"
    _same(with_seen, _shown(rec, rec.recommend("U0007", 8, exclude_seen=False)))
    assert with_seen["results"][0]["score"] <= 5.0  # a predicted rating, clipped to the 1-5 range
    seen = set(rec.items_.raws(rec.seen_rows(rec.users_.index("U0001"))))
    assert seen and not seen & set(_ranked(got)[0])


def test_recommend_allow_and_deny_lists_equal_the_library(server):
    allow = [f"D{n:04d}" for n in range(1, 60)]
    with server.client() as c:
        ranked = c.post("/recommend", json={"user_id": "U0002", "k": 5}).json()
        deny = _ranked(ranked)[0][:2]
        denied = c.post("/recommend", json={"user_id": "U0002", "k": 5, "exclude": deny}).json()
        allowed = c.post("/recommend", json={"user_id": "U0002", "k": 5, "items": allow}).json()
        allowed_get = c.get("/recommend", params={"user_id": "U0002", "k": 5, "items": ",".join(allow)}).json()
    rec = server.rec_of(ranked["model"])
    _same(denied, _shown(rec, rec.recommend("U0002", 5, exclude=deny)))
    assert not set(deny) & set(_ranked(denied)[0])
    # independently: the best 5 of the allowed unseen items by the library's exact scores
    _same(allowed, _shown(rec, rec.recommend("U0002", 5, items=allow)))
    assert set(_ranked(allowed)[0]) <= set(allow)
    assert allowed_get == allowed


def test_recommend_unknown_users_equal_the_library(server):
    history = ["D0031", "D0168", "D0056"]
    with server.client() as c:
        by_ids = c.post("/recommend", json={"history": history, "k": 6}).json()
        by_get = c.get("/recommend", params={"history": ",".join(history), "k": 6}).json()
        named = c.post("/recommend", json={"user_id": "new-visitor", "history": history, "k": 6}).json()
        weighted = c.post(
            "/recommend",
            json={"history": [{"item_id": "D0031", "weight": 5}, {"item_id": "D0168", "weight": 1}], "k": 6},
        ).json()
        nobody = c.post("/recommend", json={"k": 4}).json()
    rec = server.rec_of(by_ids["model"])
    _same(by_ids, _shown(rec, rec.recommend(history=history, k=6)), atol=1e-4)
    assert by_get == by_ids and by_ids["known_user"] is False and by_ids["kind"] == "unknown"
    assert not set(history) & set(_ranked(by_ids)[0])  # the user's own items are seen items
    assert _ranked(named)[0] == _ranked(by_ids)[0] and named["kind"] == "unknown"
    _same(weighted, _shown(rec, rec.recommend(history={"D0031": 5.0, "D0168": 1.0}, k=6)), atol=1e-4)
    _same(nobody, rec.recommend(k=4))  # popularity counts, not ratings: not clipped
    assert nobody["kind"] == "popular" and nobody["results"][0]["score"] > 5
    # the documented fallback, computed here from the training rows' item counts: the most popular items
    counts = rec.item_counts_
    assert [counts[rec.items_.index(i)] for i in _ranked(nobody)[0]] == sorted(counts, reverse=True)[:4]


def test_score_new_equals_the_library(server):
    with server.client() as c:
        answer = c.post("/score-new", json={"items": NEW_ITEMS, "user_ids": ["U0001", "U0003"], "neighbours": 3})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    rec = server.rec_of(body["model"])
    expected = rec.score_new_items(pd.DataFrame(NEW_ITEMS), ["U0001", "U0003"], k_neighbours=3)
    assert len(body["results"]) == len(expected) == 4
    for got, want in zip(body["results"], expected.itertuples()):
        assert (got["item_id"], got["user_id"], got["title"]) == (want.item_id, want.user_id, want.title)
        # the new items' text is encoded in bf16 where the CPU has it (features.text_precision auto), whose
        # rounding follows the batch and thread layout: about 1e-4 of a score between two encodings
        assert got["score"] == pytest.approx(want.score, rel=1e-3)
        assert [n["item_id"] for n in got["neighbours"]] == list(want.neighbours)
        assert [n["title"] for n in got["neighbours"]] == [rec.item_info(i)["title"] for i in want.neighbours]


def test_score_new_for_an_average_user(server):
    with server.client() as c:
        body = c.post("/score-new", json={"items": NEW_ITEMS[:1]}).json()
    rec = server.rec_of(body["model"])
    expected = rec.score_new_items(pd.DataFrame(NEW_ITEMS[:1]), None, k_neighbours=5)
    assert [r["user_id"] for r in body["results"]] == [None]
    assert body["results"][0]["score"] == pytest.approx(float(expected["score"].iloc[0]), abs=1e-4)
    assert len(body["results"][0]["neighbours"]) == 5


def test_items_show_display_fields(server):
    with server.client() as c:
        body = c.get("/items/D0031").json()
    rec = server.rec_of(body["model"])
    info = rec.item_info("D0031")
    assert {k: body[k] for k in ("item_id", "title", "price", "category")} == {
        "item_id": "D0031",
        "title": info["title"],
        "price": pytest.approx(info["price"]),
        "category": info["category"],
    }
    assert body["in_training"] is bool(rec.item_has_id_[rec.items_.index("D0031")])
    assert body["retired"] is False


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "method, path, kwargs, status, fragment",
    [
        ("get", "/items/NOPE-1", {}, 404, "unknown item id 'NOPE-1'"),
        ("get", "/similar", {"params": {"q": "Z99999"}}, 404, "unknown item id 'Z99999'"),
        ("get", "/recommend", {"params": {"user_id": "nobody-1"}}, 404, "unknown user id 'nobody-1'"),
        ("post", "/recommend", {"json": {"user_id": "nobody-1"}}, 404, "unknown user id 'nobody-1'"),
        ("post", "/score-new", {"json": {"items": NEW_ITEMS, "user_ids": ["ghost"]}}, 404, "unknown user id"),
        ("get", "/similar", {"params": {"q": "D0031", "k": 0}}, 422, "greater than or equal to 1"),
        ("get", "/similar", {"params": {"q": "D0031", "k": "ten"}}, 422, "valid integer"),
        ("get", "/similar", {"params": {"q": "D0031", "k": 1001}}, 422, "less than or equal to 1000"),
        ("get", "/similar", {"params": {"q": ""}}, 422, "at least 1 character"),
        ("get", "/similar", {"params": {"q": "   "}}, 422, "the query is empty"),
        ("get", "/similar", {}, 422, "Field required"),
        ("get", "/recommend", {"params": {"user_id": "U0001", "k": -3}}, 422, "greater than or equal to 1"),
        ("post", "/recommend", {"json": {"user_id": "U0001", "kk": 3}}, 422, "Extra inputs are not permitted"),
        ("post", "/recommend", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, ""),
        ("post", "/score-new", {"json": {"items": []}}, 422, "at least 1 item"),
        ("post", "/score-new", {"json": {"items": [{"item_id": "N9"}]}}, 422, "items[0] has no 'title'"),
        ("post", "/score-new", {"json": {"items": [{"item_id": "D0031", "title": "x"}], "neighbours": 0}}, 422, ""),
    ],
)
def test_bad_requests_get_a_clear_4xx(server, method, path, kwargs, status, fragment):
    kwargs = dict(kwargs)
    headers = AUTH | kwargs.pop("headers", {})
    with server.client() as c:
        response = c.request(method.upper(), path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.text


def test_unknown_ids_in_lists_are_404(server):
    with server.client() as c:
        response = c.post("/recommend", json={"user_id": "U0001", "items": ["D0031", "NOPE-7"]})
    assert response.status_code == 404 and "NOPE-7" in response.json()["detail"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}])
@pytest.mark.parametrize("path", ["/version", "/similar?q=D0031", "/recommend?user_id=U0001", "/items/D0031"])
def test_every_endpoint_but_health_needs_the_token(server, headers, path):
    response = httpx.get(server.url + path, headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.headers.get("www-authenticate") == "Bearer"
    posted = httpx.post(server.url + "/score-new", json={"items": NEW_ITEMS}, headers=headers, timeout=30)
    assert posted.status_code == 401


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as the kernel writes them) of IPv4/IPv6 sockets listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(address)
    return found


def test_server_binds_loopback_only(server):
    """The default host is 127.0.0.1: the one listening socket is on loopback, and no other address answers."""
    if Path("/proc/net/tcp").exists():
        assert _listening(server.port) == ["0100007F"]  # 127.0.0.1, little-endian hex
    others = set()
    try:
        others = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        pass
    others -= {"127.0.0.1"}
    others = {a for a in others if not a.startswith("127.")}
    for address in others:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((address, server.port)) != 0, f"the server answers on {address}"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass


# ------------------------------------------------------------------------------------------------ model swap
def test_a_model_swap_under_load_fails_no_request(server, demo_dataset, demo_model):
    """A different model is saved over the served link while 4 clients loop requests: every request succeeds,
    each answer equals the library's for the version it names, and the answers switch to the new model."""
    old_version = server.link.resolve().name
    other = fit_demo(demo_dataset, demo_model.cache_dir, "seed=7")  # fitted before the clock starts
    retired = other.similar_items("D0031", 1)[0][0]  # the new model's best answer, retired: it must vanish
    other.remove_items([retired])
    requests = [("/similar", {"q": "D0031", "k": 5}), ("/recommend", {"user_id": "U0001", "k": 5})]
    answers: list[tuple[int, str, dict]] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + 30
    max_requests = 2000

    def client(n: int) -> None:
        with server.client() as c:
            while not stop.is_set() and time.monotonic() < deadline:
                path, params = requests[n % 2]
                try:
                    response = c.get(path, params=params)
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"{path}: {exc!r}")
                    continue
                with lock:
                    if response.status_code != 200:
                        failures.append(f"{path}: {response.status_code} {response.text}")
                    else:
                        answers.append((n % 2, path, response.json()))
                    new = sum(1 for *_, a in answers if a["model"] != old_version)
                    if len(answers) + len(failures) >= max_requests or new >= 40:
                        stop.set()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while len(answers) < 40 and time.monotonic() < deadline:  # a few answers from the old model first
        time.sleep(0.05)
    new_root = other.save(server.link)  # through `latest`: the save replaces models/demo's version
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    versions = [a["model"] for *_, a in answers]
    assert versions[0] == old_version and new_root.name in versions, f"no answer from {new_root.name}"
    # once a request saw the new model, none after it went back (the swap is one reference)
    first_new = versions.index(new_root.name)
    assert set(versions[first_new + 8 :]) <= {new_root.name}  # requests begun before the swap may end after it
    old, new = server.rec_of(old_version), server.rec_of(new_root.name)
    expected = {
        "/similar": {v: r.similar_items("D0031", 5) for v, r in ((old_version, old), (new_root.name, new))},
        "/recommend": {v: _shown(r, r.recommend("U0001", 5)) for v, r in ((old_version, old), (new_root.name, new))},
    }
    for _, path, answer in answers:
        _same(answer, expected[path][answer["model"]])
    assert expected["/similar"][old_version][0] != expected["/similar"][new_root.name][0]  # a different model
    assert not [a for *_, a in answers if a["model"] == new_root.name and retired in _ranked(a)[0]]
    with server.client() as c:
        health = c.get("/health").json()
        item = c.get(f"/items/{retired}").json()
    assert health["model"] == new_root.name and health["reloads"] >= 1
    assert item["retired"] is True and item["model"] == new_root.name


def test_a_broken_version_keeps_the_old_model_serving(server, tmp_path):
    """The link moved to a folder that is no model: /health says why, and the last good model keeps answering."""
    serving = server.link.resolve()
    demo = server.link.parent / "demo"
    broken = tmp_path / "broken-version"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    real = os.readlink(demo)
    point_link(demo, broken)
    try:
        deadline = time.monotonic() + 30
        health = {}
        while time.monotonic() < deadline:
            health = httpx.get(server.url + "/health", timeout=10).json()
            if health["reload_error"]:
                break
            time.sleep(0.2)
        assert "manifest.json" in (health["reload_error"] or "")
        assert health["model"] == serving.name
        with server.client() as c:
            answer = c.get("/similar", params={"q": "D0031", "k": 3})
        assert answer.status_code == 200 and answer.json()["model"] == serving.name
    finally:
        tmp_link = demo.parent / ".demo.restore"
        os.symlink(real, tmp_link)
        os.replace(tmp_link, demo)


def test_serve_refuses_a_missing_model_with_one_line(tmp_path):
    done = subprocess.run(
        [_exe(), "serve", "--model", str(tmp_path / "nothing"), "--port", str(_free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: no model at")


def test_serve_refuses_a_taken_port_and_an_empty_token_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [_exe(), "serve", "--model", str(tmp_path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: 127.0.0.1:{port}: Address already in use"]
    env = {k: v for k, v in os.environ.items() if k != "HYBRIDREC_TOKEN"}
    done = subprocess.run(
        [_exe(), "serve", "--model", str(tmp_path), "--port", str(_free_port()), "--token", ""],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1]
        == "error: the bearer token is empty: give a non-empty token, or none for an open service"
    )


def test_queries_encode_in_memory_not_through_the_disk_cache(server):
    """Free text and new items are encoded by the warm text model with an in-memory memo: the server's text cache
    folder ($HYBRIDREC_CACHE_DIR) gets no file, and a repeated text gets the same answer."""
    with server.client() as c:
        first = c.get("/similar", params={"q": "a brand new gadget nobody has described yet", "k": 5}).json()
        again = c.get("/similar", params={"q": "a brand new gadget nobody has described yet", "k": 5}).json()
        scored = c.post("/score-new", json={"items": [{"item_id": "MEMO-1", "title": "a memo test item"}]})
    assert first["match"] == "content" and again == first and scored.status_code == 200
    assert not server.cache.exists() or not any(server.cache.rglob("*"))
